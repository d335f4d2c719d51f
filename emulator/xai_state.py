"""xAI-protocol batches (reference §8): counters, paged results and per-request states.

A rejected file shows as a batch cancelled at its parse time with one sentence in
`cancel_by_xai_message`; results are listed as they finish, in completion order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulator.completions import chat_completion_json
from emulator.config import BATCH_URLS
from emulator.lifecycle import Batch, BatchBook
from emulator.validation import ValidationFailedError


@dataclass(kw_only=True)
class XaiBatch(Batch):
    name: str
    cancel_message: str | None = None


def _fmt_time(ts: float | None, style: str) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    if style == "date":
        return moment.strftime("%Y-%m-%d")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class XaiBatches(BatchBook[XaiBatch]):
    """The xAI batch records; methods mirror the REST routes."""

    def create(self, name: str, input_file_id: str | None) -> XaiBatch:
        return self._add(XaiBatch, name=name, input_file_id=input_file_id)

    def _accepts(self, batch: XaiBatch) -> tuple[frozenset[str], frozenset[str] | None]:
        return BATCH_URLS, self.store.config.batch_models

    def _reject(self, batch: XaiBatch, problems: ValidationFailedError) -> None:
        batch.cancel_at = batch.parse_at
        batch.cancel_message = f"JSONL file validation failed: {problems}"

    def batch_json(self, batch: XaiBatch) -> dict[str, Any]:
        store = self.store
        with store.lock:
            self.advance(batch)
            total = len(batch.custom_ids)
            done = batch.finished(store.clock())
            errors = batch.schedule.failures(done)
            cancelled = total - done if batch.cancel_at is not None and batch.parsed else 0
            style = store.config.timestamps
            return {
                "batch_id": batch.batch_id,
                "name": batch.name,
                "create_time": _fmt_time(batch.created, style),
                "expire_time": _fmt_time(batch.expires, style),
                "create_api_key_id": "********-****-****-****-************",
                "cancel_time": _fmt_time(batch.cancel_at, style),
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

    def cancel(self, batch: XaiBatch) -> None:
        with self.store.lock:
            self.advance(batch)
            if batch.cancel_at is None:
                batch.cancel_at = self.store.clock()

    def results_page(self, batch: XaiBatch, offset: int, limit: int) -> tuple[list[str], int]:
        """Finished results (as JSON texts) from completion rank `offset`, and the next offset."""
        store = self.store
        with store.lock:
            self.advance(batch)
            if store.clock() >= batch.expires and not batch.parsed:
                return [], offset
            ranks = range(offset, min(batch.finished(store.clock()), offset + limit))
        return [self._result(batch, rank) for rank in ranks], ranks.stop

    def _result(self, batch: XaiBatch, rank: int) -> str:
        config = self.store.config
        index = batch.schedule.order[rank]
        custom_id = json.dumps(batch.custom_ids[index], ensure_ascii=False)
        if batch.schedule.failed[rank]:
            message = f"Internal error while processing request {batch.custom_ids[index]}"
            error: Any = {"code": 13, "message": message} if config.error_shape == "object" else message
            return f'{{"batch_request_id":{custom_id},"batch_result":{{"error":{json.dumps(error)}}}}}'
        completion = chat_completion_json(
            batch.bodies[index],
            int(batch.schedule.finish_at[rank]),
            invalid_output_rate=config.invalid_output_rate,
            seed=config.seed,
            batch=True,  # billed with the model's batch discount, like xAI
            bill_factor=config.bill_factor,
        )
        response = f'{{"response":{{"chat_get_completion":{completion}}}}}'
        return f'{{"batch_request_id":{custom_id},"batch_result":{response}}}'

    def request_states(self, batch: XaiBatch) -> list[dict[str, Any]]:
        with self.store.lock:
            self.advance(batch)
            done = batch.finished(self.store.clock())
            rank_of = {index: rank for rank, index in enumerate(batch.schedule.order)}
            items = []
            for index, custom_id in enumerate(batch.custom_ids):
                rank = rank_of[index]
                if rank < done:
                    state = "failed" if batch.schedule.failed[rank] else "succeeded"
                elif batch.cancel_at is not None:
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
