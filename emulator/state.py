"""The emulated xAI service's files and batches, advanced lazily from the clock.

No background threads: every read computes where a batch stands at `now`, which
keeps the emulator deterministic for a given seed and cheap for huge batches
(counters and result pages are O(log n) and O(page) via the completion order).
"""

from __future__ import annotations

import bisect
import gc
import itertools
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulator.completions import chat_completion_json

# Models that accepted batch requests in live tests (reference §1.5); everything
# else is refused with xAI's message. Configurable per emulator.
DEFAULT_BATCH_MODELS = frozenset(
    {
        "grok-4.3",
        "grok-4.20-0309-reasoning",
        "grok-4.20-0309-non-reasoning",
        "grok-4.20-multi-agent-0309",
        "grok-4-1-fast-reasoning",
        "grok-4-1-fast-non-reasoning",
        "grok-4-fast-reasoning",
        "grok-4-fast-non-reasoning",
        "grok-3",
    }
)
BATCH_URLS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos/generations",
        "/v1/videos",
        "/v1/videos/edits",
        "/v1/videos/extensions",
    }
)


@dataclass
class EmulatorConfig:
    """Knobs of the emulated service; every fault is off by default."""

    api_key: str | None = "emulator-key"  # None accepts any bearer token
    batch_models: frozenset[str] = DEFAULT_BATCH_MODELS
    parse_delay_s: float = 0.2  # counters stay 0 this long after create
    processing_s: float = 1.0  # time from parse until the last request finishes
    expire_after_s: float = 86_400.0
    fail_rate: float = 0.0  # fraction of requests that end with an error result
    rate_429: float = 0.0
    rate_500: float = 0.0
    drop_rate: float = 0.0  # connections closed without any response
    drop_after_create_rate: float = 0.0  # batch created, then the reply is lost
    retry_after_s: float = 1.0
    error_shape: str = "object"  # "object" -> {code, message}; "string"
    last_page_token: str | None = None  # None -> null; "" -> empty string
    timestamps: str = "rfc3339"  # or "date" (bare YYYY-MM-DD, as REST docs show)
    max_file_bytes: int = 50 * 1024 * 1024
    max_lines: int = 50_000
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise KeyError(f"unknown emulator setting {key!r}")
            setattr(self, key, frozenset(value) if key == "batch_models" else value)


@dataclass
class FileRecord:
    file_id: str
    filename: str
    purpose: str | None
    content: bytes
    created: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.file_id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created),
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose or "batch",
            "public_url": None,
            "public_url_expires_at": None,
        }


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
    # Filled at parse time: requests in input order, and the completion order.
    custom_ids: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # request index by completion rank
    finish_at: list[float] = field(default_factory=list)  # ascending, by rank
    failed: list[bool] = field(default_factory=list)  # by rank
    failed_prefix: list[int] = field(default_factory=list)  # failures among first k ranks


def _fmt_time(ts: float | None, style: str) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    if style == "date":
        return moment.strftime("%Y-%m-%d")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ValidationFailedError(Exception):
    pass


class ServiceState:
    """All files and batches, guarded by one lock; methods mirror the REST routes."""

    def __init__(self, config: EmulatorConfig, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.batch_order: list[str] = []
        self.request_log: list[tuple[str, str, int]] = []
        self._rng = random.Random(config.seed)

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
            self.request_log.append((method, path, status))

    def count(self, method: str, path: str, status: int | None = None) -> int:
        """How many requests hit `method path` (exact path), optionally with a status."""
        with self.lock:
            return sum(
                1
                for m, p, s in self.request_log
                if m == method and p == path and (status is None or s == status)
            )

    # -- files --------------------------------------------------------------
    def add_file(self, filename: str, purpose: str | None, content: bytes) -> FileRecord:
        with self.lock:
            record = FileRecord(self.new_id("file"), filename, purpose, content, self.clock())
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
            try:
                self._load_requests(batch)
            except ValidationFailedError as exc:
                batch.cancel_time = batch.parse_at
                batch.cancel_message = f"JSONL file validation failed: {exc}"
                batch.custom_ids, batch.bodies = [], []
                return
            count = len(batch.custom_ids)
            rng = random.Random(f"{self.config.seed}:{batch.batch_id}")
            batch.order = list(range(count))
            rng.shuffle(batch.order)
            span = self.config.processing_s
            batch.finish_at = [batch.parse_at + span * (k + 1) / count for k in range(count)]
            batch.failed = [rng.random() < self.config.fail_rate for _ in range(count)]
            batch.failed_prefix = list(itertools.accumulate(batch.failed, initial=0))
            # A big batch is millions of long-lived objects: keep the cyclic GC from rescanning them.
            gc.freeze()

    def _load_requests(self, batch: BatchRecord) -> None:
        record = self.files.get(batch.input_file_id or "")
        if record is None:
            raise ValidationFailedError(f"input file {batch.input_file_id} not found")
        lines = [line for line in record.content.split(b"\n") if line.strip()]
        if not lines:
            raise ValidationFailedError("the file holds no requests")
        if len(lines) > self.config.max_lines:
            raise ValidationFailedError(
                f"{len(lines)} requests exceed the maximum of {self.config.max_lines} per file"
            )
        seen: set[str] = set()
        for number, raw in enumerate(lines, start=1):
            try:
                line = json.loads(raw)
            except ValueError:
                raise ValidationFailedError(f"line {number} is not valid JSON") from None
            if not isinstance(line, dict):
                raise ValidationFailedError(f"line {number} is not a JSON object")
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                raise ValidationFailedError(f"line {number}: custom_id is missing")
            if custom_id in seen:
                raise ValidationFailedError(f"line {number}: duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            if line.get("method") != "POST":
                raise ValidationFailedError(f"line {number}: method must be POST")
            if line.get("url") not in BATCH_URLS:
                raise ValidationFailedError(f"line {number}: unsupported url {line.get('url')!r}")
            body = line.get("body")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValidationFailedError(f"line {number}: body.messages is missing")
            model = body.get("model")
            if model not in self.config.batch_models:
                raise ValidationFailedError(f"Model {model} is not supported for batch processing.")
            batch.custom_ids.append(custom_id)
            batch.bodies.append(body)

    def _finished_ranks(self, batch: BatchRecord) -> int:
        """How many requests (by completion rank) have finished by now."""
        horizon = min(self.clock(), batch.expires)
        if batch.cancel_time is not None:
            horizon = min(horizon, batch.cancel_time)
        return bisect.bisect_right(batch.finish_at, horizon)

    def batch_json(self, batch: BatchRecord) -> dict[str, Any]:
        with self.lock:
            self.advance(batch)
            total = len(batch.custom_ids)
            done = self._finished_ranks(batch)
            errors = batch.failed_prefix[done] if batch.failed_prefix else 0
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
        index = batch.order[rank]
        custom_id = json.dumps(batch.custom_ids[index], ensure_ascii=False)
        if batch.failed[rank]:
            message = f"Internal error while processing request {batch.custom_ids[index]}"
            error: Any = {"code": 13, "message": message} if self.config.error_shape == "object" else message
            return f'{{"batch_request_id":{custom_id},"batch_result":{{"error":{json.dumps(error)}}}}}'
        completion = chat_completion_json(batch.bodies[index], int(batch.finish_at[rank]))
        response = f'{{"response":{{"chat_get_completion":{completion}}}}}'
        return f'{{"batch_request_id":{custom_id},"batch_result":{response}}}'

    def request_states(self, batch: BatchRecord) -> list[dict[str, Any]]:
        with self.lock:
            self.advance(batch)
            done = self._finished_ranks(batch)
            rank_of = {index: rank for rank, index in enumerate(batch.order)}
            items = []
            for index, custom_id in enumerate(batch.custom_ids):
                rank = rank_of[index]
                if rank < done:
                    state = "failed" if batch.failed[rank] else "succeeded"
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
