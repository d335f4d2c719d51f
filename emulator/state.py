"""The emulated xAI service's files and batches, advanced lazily from the clock.

No background threads: every read computes where a batch stands at `now`, which
keeps the emulator deterministic for a given seed and cheap for huge batches
(counters and result pages are O(log n) and O(page) via the completion order).
"""

from __future__ import annotations

import gc
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from emulator.completions import chat_completion_json
from emulator.config import BATCH_URLS, DEFAULT_BATCH_MODELS, EmulatorConfig
from emulator.openai_state import OpenAIBatches
from emulator.schedule import Schedule
from emulator.validation import ValidationFailedError, parse_requests

__all__ = [
    "BATCH_URLS",
    "DEFAULT_BATCH_MODELS",
    "BatchRecord",
    "EmulatorConfig",
    "FileRecord",
    "LoggedRequest",
    "ServiceState",
    "ValidationFailedError",
]


class LoggedRequest(NamedTuple):
    """One request as the service saw it; `time` (clock seconds) lets tests measure a client's pace."""

    method: str
    path: str
    status: int  # 0 = connection dropped without a reply
    time: float


class NotAllowedError(Exception):
    """A method the route does not take (405)."""


@dataclass
class FileRecord:
    file_id: str
    filename: str
    purpose: str | None
    content: bytes
    created: float

    def as_json(self, flavor: str = "xai") -> dict[str, Any]:
        common = {
            "id": self.file_id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created),
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose or "batch",
        }
        if flavor == "openai":
            return {**common, "status": "processed", "status_details": None}
        return {**common, "public_url": None, "public_url_expires_at": None}

    def reply(self, state: ServiceState, method: str, rest: str | None, flavor: str) -> tuple[int, Any]:
        """GET (metadata or /content) and DELETE of this file, the same in both protocols."""
        if method == "GET" and rest == "/content":
            return 200, self.content
        if method == "GET" and rest is None:
            return 200, self.as_json(flavor)
        if method == "DELETE" and rest is None:
            with state.lock:
                state.files.pop(self.file_id, None)
            return 200, {"id": self.file_id, "object": "file", "deleted": True}
        raise NotAllowedError(f"{method} not allowed here")


@dataclass
class BatchRecord:
    batch_id: str
    name: str
    input_file_id: str | None
    created: float
    expires: float
    parse_at: float
    cancel_time: float | None = None
    cancel_message: str | None = None
    parsed: bool = False
    # Filled at parse time: requests in input order, and when each one finishes.
    custom_ids: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    schedule: Schedule = field(default_factory=Schedule)


def _fmt_time(ts: float | None, style: str) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    if style == "date":
        return moment.strftime("%Y-%m-%d")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ServiceState:
    """All files and batches, guarded by one lock; methods mirror the REST routes."""

    def __init__(self, config: EmulatorConfig, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.batch_order: list[str] = []
        self.request_log: list[LoggedRequest] = []
        self._rng = random.Random(config.seed)
        self.openai = OpenAIBatches(self)  # OpenAI-protocol batches: separate records, shared files

    def configure(self, changes: dict[str, Any]) -> None:
        """Change knobs at run time; a new `seed` restarts the fault sequence."""
        with self.lock:
            self.config.update(changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)

    # -- bookkeeping --------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{uuid.UUID(int=self._rng.getrandbits(128))}"

    def roll(self, rate: float) -> bool:
        with self.lock:
            return rate > 0 and self._rng.random() < rate

    def log(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.request_log.append(LoggedRequest(method, path, status, self.clock()))

    def times(self, method: str, path: str, status: int | None = None) -> list[float]:
        """Clock times of the requests to `method path` (exact path), optionally with a status."""
        with self.lock:
            return [
                entry.time
                for entry in self.request_log
                if entry.method == method and entry.path == path and status in (None, entry.status)
            ]

    def count(self, method: str, path: str, status: int | None = None) -> int:
        """How many requests hit `method path` (exact path), optionally with a status."""
        return len(self.times(method, path, status))

    # -- files --------------------------------------------------------------
    def add_file(
        self, filename: str, purpose: str | None, content: bytes, created: float | None = None
    ) -> FileRecord:
        with self.lock:
            moment = self.clock() if created is None else created
            record = FileRecord(self.new_id("file"), filename, purpose, content, moment)
            self.files[record.file_id] = record
            return record

    # -- batches ------------------------------------------------------------
    def create_batch(self, name: str, input_file_id: str | None) -> BatchRecord:
        with self.lock:
            now = self.clock()
            record = BatchRecord(
                batch_id=self.new_id("batch"),
                name=name,
                input_file_id=input_file_id,
                created=now,
                expires=now + self.config.expire_after_s,
                parse_at=now + self.config.parse_delay_s,
            )
            self.batches[record.batch_id] = record
            self.batch_order.append(record.batch_id)
            return record

    def advance(self, batch: BatchRecord) -> None:
        """Parse the file once its parse time has come (counters stay 0 until then)."""
        with self.lock:
            if batch.parsed or batch.input_file_id is None:
                return
            now = self.clock()
            if now < batch.parse_at or batch.cancel_time is not None:
                return
            batch.parsed = True
            record = self.files.get(batch.input_file_id)
            try:
                batch.custom_ids, batch.bodies = parse_requests(
                    record.content if record else None,
                    batch.input_file_id,
                    max_lines=self.config.max_lines,
                    urls=BATCH_URLS,
                    models=self.config.batch_models,
                )
            except ValidationFailedError as exc:
                batch.cancel_time = batch.parse_at
                batch.cancel_message = f"JSONL file validation failed: {exc}"
                return
            batch.schedule = self.plan(batch.batch_id, len(batch.custom_ids), batch.parse_at)

    def plan(self, batch_id: str, count: int, start: float) -> Schedule:
        """The completion plan of a freshly parsed batch (either protocol)."""
        config = self.config
        schedule = Schedule.build(
            f"{config.seed}:{batch_id}", count, start, config.processing_s, config.fail_rate
        )
        # A big batch is millions of long-lived objects: keep the cyclic GC from rescanning them.
        gc.freeze()
        return schedule

    def _finished_ranks(self, batch: BatchRecord) -> int:
        """How many requests (by completion rank) have finished by now."""
        horizon = min(self.clock(), batch.expires)
        if batch.cancel_time is not None:
            horizon = min(horizon, batch.cancel_time)
        return batch.schedule.finished(horizon)

    def batch_json(self, batch: BatchRecord) -> dict[str, Any]:
        with self.lock:
            self.advance(batch)
            total = len(batch.custom_ids)
            done = self._finished_ranks(batch)
            errors = batch.schedule.failures(done)
            cancelled = total - done if batch.cancel_time is not None and batch.parsed else 0
            style = self.config.timestamps
            return {
                "batch_id": batch.batch_id,
                "name": batch.name,
                "create_time": _fmt_time(batch.created, style),
                "expire_time": _fmt_time(batch.expires, style),
                "create_api_key_id": "********-****-****-****-************",
                "cancel_time": _fmt_time(batch.cancel_time, style),
                "cancel_by_xai_message": batch.cancel_message,
                "state": {
                    "num_requests": total,
                    "num_pending": total - done - cancelled,
                    "num_success": done - errors,
                    "num_error": errors,
                    "num_cancelled": cancelled,
                },
                "input_file_id": batch.input_file_id,
            }

    def cancel(self, batch: BatchRecord) -> None:
        with self.lock:
            self.advance(batch)
            if batch.cancel_time is None:
                batch.cancel_time = self.clock()

    def results_page(self, batch: BatchRecord, offset: int, limit: int) -> tuple[list[str], int]:
        """Finished results (as JSON texts) from completion rank `offset`, and the next offset."""
        with self.lock:
            self.advance(batch)
            if self.clock() >= batch.expires and not batch.parsed:
                return [], offset
            ranks = range(offset, min(self._finished_ranks(batch), offset + limit))
        return [self._result(batch, rank) for rank in ranks], ranks.stop

    def _result(self, batch: BatchRecord, rank: int) -> str:
        index = batch.schedule.order[rank]
        custom_id = json.dumps(batch.custom_ids[index], ensure_ascii=False)
        if batch.schedule.failed[rank]:
            message = f"Internal error while processing request {batch.custom_ids[index]}"
            error: Any = {"code": 13, "message": message} if self.config.error_shape == "object" else message
            return f'{{"batch_request_id":{custom_id},"batch_result":{{"error":{json.dumps(error)}}}}}'
        completion = chat_completion_json(
            batch.bodies[index],
            int(batch.schedule.finish_at[rank]),
            invalid_output_rate=self.config.invalid_output_rate,
            seed=self.config.seed,
        )
        response = f'{{"response":{{"chat_get_completion":{completion}}}}}'
        return f'{{"batch_request_id":{custom_id},"batch_result":{response}}}'

    def request_states(self, batch: BatchRecord) -> list[dict[str, Any]]:
        with self.lock:
            self.advance(batch)
            done = self._finished_ranks(batch)
            rank_of = {index: rank for rank, index in enumerate(batch.schedule.order)}
            items = []
            for index, custom_id in enumerate(batch.custom_ids):
                rank = rank_of[index]
                if rank < done:
                    state = "failed" if batch.schedule.failed[rank] else "succeeded"
                elif batch.cancel_time is not None:
                    state = "cancelled"
                else:
                    state = "pending"
                items.append(
                    {
                        "batch_request_id": custom_id,
                        "endpoint": "xai_api.Chat/GetCompletion",
                        "model": batch.bodies[index].get("model"),
                        "state": state,
                    }
                )
            return items
