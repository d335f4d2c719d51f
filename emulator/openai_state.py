"""OpenAI-protocol batches (reference §2.3, §3, §7), advanced lazily from the clock.

Kept apart from the xAI records because the two services disagree on almost
everything a client branches on: OpenAI has a `status` field that walks
validating → in_progress → finalizing → completed (or failed / expired /
cancelling → cancelled), delivers results as output and error *files* written
when the batch ends, and salvages finished work of expired or cancelled batches.
What they share (files, the lifecycle up to the parse, the line checks, the
answers) comes from store.py, lifecycle.py, validation.py and completions.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from emulator.completions import chat_completion
from emulator.lifecycle import Batch, BatchBook
from emulator.validation import Problem, ValidationFailedError

# What `client.batches.create(endpoint=...)` may name (openai-python BatchCreateParams).
OPENAI_ENDPOINTS = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }
)
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
_WITH_FILES = frozenset({"completed", "expired", "cancelled"})
_UNFINISHED = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}
_STAMPED = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")


class CannotCancelError(Exception):
    """Cancel asked of a batch that already ended (the route answers 400)."""


@dataclass(kw_only=True)
class OpenAIBatch(Batch):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    finalizing_s: float
    cancelling_s: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    results_written: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict[str, Any] | None = None

    @property
    def model(self) -> str | None:
        """The first request's model, once the file is accepted."""
        return str(self.bodies[0].get("model")) if self.bodies else None

    def parse_due(self, now: float) -> bool:
        return super().parse_due(now) and self.expires > self.parse_at  # else expired while validating

    def events(self) -> list[tuple[str, float]]:
        """Every status change as (status, time); the status at t is the last one at or before t.

        Known in full once parsed (or cancelled), because finishing times are planned then."""
        events = [("validating", self.created)]
        cancel = []
        if self.cancel_at is not None:
            cancel = [("cancelling", self.cancel_at), ("cancelled", self.cancel_at + self.cancelling_s)]
        if not self.parsed:
            if cancel:
                return events + cancel
            return [*events, ("expired", self.expires)] if self.expires <= self.parse_at else events
        if self.problems:
            return [*events, ("failed", self.parse_at)]
        events.append(("in_progress", self.parse_at))
        last = self.schedule.last_finish or self.parse_at
        if cancel:
            return events + ([("finalizing", last)] if last <= cancel[0][1] else []) + cancel
        if last > self.expires:
            return [*events, ("expired", self.expires)]
        return [*events, ("finalizing", last), ("completed", last + self.finalizing_s)]


class OpenAIBatches(BatchBook[OpenAIBatch]):
    """The OpenAI batch records; result files go to the shared store."""

    max_problems = 1000  # bad lines listed in `errors.data`

    def create(
        self, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str] | None
    ) -> OpenAIBatch:
        store = self.store
        with store.lock:
            return self._add(
                OpenAIBatch,
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                metadata=metadata,
                finalizing_s=store.config.finalizing_s,
            )

    def _accepts(self, batch: OpenAIBatch) -> tuple[frozenset[str], frozenset[str] | None]:
        return frozenset({batch.endpoint}), self.store.config.openai_models

    def _reject(self, batch: OpenAIBatch, problems: ValidationFailedError) -> None:
        batch.problems = problems.problems

    def status(self, batch: OpenAIBatch) -> tuple[str, list[tuple[str, float]]]:
        """The status now and the events reached so far; writes the result files on arrival."""
        with self.store.lock:
            self.advance(batch)
            now = self.store.clock()
            reached = [(name, moment) for name, moment in batch.events() if moment <= now]
            status, since = reached[-1]
            if status in _WITH_FILES and not batch.results_written:
                self._write_results(batch, status, since)
            return status, reached

    def cancel(self, batch: OpenAIBatch) -> None:
        with self.store.lock:
            status, _ = self.status(batch)
            if status in TERMINAL:
                raise CannotCancelError(f"Cannot cancel a batch with status '{status}'.")
            if batch.cancel_at is None:
                batch.cancel_at = self.store.clock()
                batch.cancelling_s = self.store.config.cancelling_s

    def as_json(self, batch: OpenAIBatch) -> dict[str, Any]:
        """The Batch object as openai-python's `Batch` model reads it."""
        with self.store.lock:
            status, reached = self.status(batch)
            stamps = {name: int(moment) for name, moment in reached}
            done = batch.finished(self.store.clock())
            failed = batch.schedule.failures(done)
            errors = [p.as_openai() for p in batch.problems]
            return {
                "id": batch.batch_id,
                "object": "batch",
                "endpoint": batch.endpoint,
                "model": batch.model,
                "errors": {"object": "list", "data": errors} if errors else None,
                "input_file_id": batch.input_file_id,
                "completion_window": batch.completion_window,
                "status": status,
                "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id,
                "created_at": int(batch.created),
                "expires_at": int(batch.expires),
                **{f"{name}_at": stamps.get(name) for name in _STAMPED},
                "request_counts": {
                    "total": len(batch.custom_ids),
                    "completed": done - failed,
                    "failed": failed,
                },
                "metadata": batch.metadata,
                "usage": batch.usage,
            }

    def page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        """Batches newest first, starting after the batch `after` (a cursor, as OpenAI pages)."""
        with self.store.lock:
            ids = self.order[::-1]
            if after is not None:
                ids = ids[ids.index(after) + 1 :] if after in self.batches else []
            return [self.as_json(self.batches[i]) for i in ids[:limit]], len(ids) > limit

    # -- result files -------------------------------------------------------
    def _write_results(self, batch: OpenAIBatch, status: str, moment: float) -> None:
        """Output file (answered requests) and error file (failed and never-run ones), written once
        the batch ends, in completion order (a seeded shuffle of the input order)."""
        config = self.store.config
        schedule = batch.schedule
        done = batch.finished(moment)
        output: list[str] = []
        errors: list[str] = []
        totals = [0, 0, 0, 0]  # input, cached, output, reasoning tokens
        for rank, index in enumerate(schedule.order):
            digest = hashlib.sha256(f"{batch.batch_id}:{index}".encode()).hexdigest()
            line: dict[str, Any] = {"id": f"batch_req_{digest[:32]}", "custom_id": batch.custom_ids[index]}
            if rank >= done:
                code, message = _UNFINISHED[status]
                errors.append(_dumps({**line, "response": None, "error": {"code": code, "message": message}}))
                continue
            if schedule.failed[rank]:
                body: dict[str, Any] = {
                    "error": {
                        "message": f"Internal error while processing request {batch.custom_ids[index]}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
                response = {"status_code": 500, "request_id": f"req_{digest[32:]}", "body": body}
                errors.append(_dumps({**line, "response": response, "error": None}))
                continue
            body = chat_completion(
                batch.bodies[index],
                int(schedule.finish_at[rank]),
                "openai",
                invalid_output_rate=config.invalid_output_rate,
                seed=config.seed,
            )
            usage = body["usage"]
            totals[0] += usage["prompt_tokens"]
            totals[1] += usage["prompt_tokens_details"]["cached_tokens"]
            totals[2] += usage["completion_tokens"]
            totals[3] += usage["completion_tokens_details"]["reasoning_tokens"]
            response = {"status_code": 200, "request_id": f"req_{digest[32:]}", "body": body}
            output.append(_dumps({**line, "response": response, "error": None}))
        batch.output_file_id = self._save(batch, "output", output, moment)
        batch.error_file_id = self._save(batch, "error", errors, moment)
        if batch.error_file_id is None and config.error_file_id_empty:
            batch.error_file_id = ""  # what one live probe saw on a clean batch (reference §7)
        if batch.parsed:
            batch.usage = {
                "input_tokens": totals[0],
                "input_tokens_details": {"cached_tokens": totals[1]},
                "output_tokens": totals[2],
                "output_tokens_details": {"reasoning_tokens": totals[3]},
                "total_tokens": totals[0] + totals[2],
            }
        batch.results_written = True

    def _save(self, batch: OpenAIBatch, kind: str, lines: list[str], moment: float) -> str | None:
        if not lines:
            return None
        content = ("\n".join(lines) + "\n").encode("utf-8")
        name = f"{batch.batch_id}_{kind}.jsonl"
        return self.store.add_file(name, "batch_output", content, created=moment).file_id


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
