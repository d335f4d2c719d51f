"""What a batch of either protocol shares, and the one lifecycle that advances it.

No background threads: every read computes where a batch stands at `now`, which
keeps the emulator deterministic for a given seed and cheap for huge batches
(counters and result pages are O(log n) and O(page) via the completion order).
A batch's input file is parsed once, at its parse time: rejected (each protocol
reports that its own way) or planned from then on (schedule.py).
"""

from __future__ import annotations

import gc
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from emulator.schedule import Schedule
from emulator.store import Store
from emulator.validation import ValidationFailedError, parse_requests


@dataclass(kw_only=True)
class Batch:
    batch_id: str
    input_file_id: str | None
    created: float
    expires: float
    parse_at: float
    cancel_at: float | None = None
    parsed: bool = False
    # Filled at parse time: requests in input order, and when each one finishes.
    custom_ids: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    schedule: Schedule = field(default_factory=Schedule)

    def parse_due(self, now: float) -> bool:
        """Whether to parse the input file now: once its parse time has come, unless cancelled first."""
        return not self.parsed and self.cancel_at is None and now >= self.parse_at

    def horizon(self, now: float) -> float:
        """Requests finishing after this moment never run (expiry, cancel)."""
        return min(now, self.expires, math.inf if self.cancel_at is None else self.cancel_at)

    def finished(self, now: float) -> int:
        """How many requests (by completion rank) have finished by `now`."""
        return self.schedule.finished(self.horizon(now))


B = TypeVar("B", bound=Batch)


class BatchBook(ABC, Generic[B]):
    """One protocol's batches in creation order; the protocol says which lines its files
    may hold and how it reports a rejected file."""

    max_problems = 1  # bad lines a rejected file reports

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: dict[str, B] = {}
        self.order: list[str] = []  # creation order

    def _add(self, make: Callable[..., B], **fields: Any) -> B:
        """A batch created now, parsed after `parse_delay_s` and expiring after `expire_after_s`."""
        store = self.store
        with store.lock:
            now, config = store.clock(), store.config
            batch = make(
                batch_id=store.new_id("batch"),
                created=now,
                expires=now + config.expire_after_s,
                parse_at=now + config.parse_delay_s,
                **fields,
            )
            self.batches[batch.batch_id] = batch
            self.order.append(batch.batch_id)
            return batch

    def forget(self, batch_id: str) -> bool:
        """Drop a batch as if the service had deleted it (after its retention): every route
        naming it answers 404 from now on. False when there is no such batch."""
        with self.store.lock:
            if self.batches.pop(batch_id, None) is None:
                return False
            self.order.remove(batch_id)
            return True

    def advance(self, batch: B) -> None:
        """Parse the input file once its parse time has come (counters stay 0 until then)."""
        store = self.store
        with store.lock:
            if batch.input_file_id is None or not batch.parse_due(store.clock()):
                return
            batch.parsed = True
            config = store.config
            record = store.files.get(batch.input_file_id)
            urls, models = self._accepts(batch)
            try:
                batch.custom_ids, batch.bodies = parse_requests(
                    record.content if record else None,
                    batch.input_file_id,
                    max_lines=config.max_lines,
                    urls=urls,
                    models=models,
                    max_problems=self.max_problems,
                )
            except ValidationFailedError as exc:
                self._reject(batch, exc)
                return
            batch.schedule = Schedule.build(
                f"{config.seed}:{batch.batch_id}",
                len(batch.custom_ids),
                batch.parse_at,
                config.processing_s,
                config.fail_rate,
            )
            # A big batch is millions of long-lived objects: keep the cyclic GC from rescanning them.
            gc.freeze()

    @abstractmethod
    def _accepts(self, batch: B) -> tuple[frozenset[str], frozenset[str] | None]:
        """The urls and the models (None = any) the lines of `batch`'s file may name."""

    @abstractmethod
    def _reject(self, batch: B, problems: ValidationFailedError) -> None:
        """Record why `batch`'s file was refused."""
