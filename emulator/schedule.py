"""When each request of a parsed batch finishes, and whether it fails.

Both protocols advance batches lazily from the clock, so a batch is a fixed plan
made once at parse time: a seeded shuffle (completion order, which is also the
order results are listed in), ascending finish times and a failure flag per rank.
Counting finished requests is then a bisect, and a page of results is O(page).
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field


@dataclass
class Schedule:
    order: list[int] = field(default_factory=list)  # request index by completion rank
    finish_at: list[float] = field(default_factory=list)  # ascending, by rank
    failed: list[bool] = field(default_factory=list)  # by rank
    failed_prefix: list[int] = field(default_factory=list)  # failures among the first k ranks

    @classmethod
    def build(cls, key: str, count: int, start: float, span: float, fail_rate: float) -> Schedule:
        """Requests finish evenly over `span` seconds from `start`, in an order seeded by `key`."""
        rng = random.Random(key)
        order = list(range(count))
        rng.shuffle(order)
        finish_at = [start + span * (k + 1) / count for k in range(count)]
        failed = [rng.random() < fail_rate for _ in range(count)]
        return cls(order, finish_at, failed, list(itertools.accumulate(failed, initial=0)))

    def finished(self, horizon: float) -> int:
        """How many requests (by completion rank) have finished by `horizon`."""
        return bisect.bisect_right(self.finish_at, horizon)

    def failures(self, finished: int) -> int:
        """How many of the first `finished` ranks ended with an error."""
        return self.failed_prefix[finished] if self.failed_prefix else 0

    @property
    def last_finish(self) -> float | None:
        return self.finish_at[-1] if self.finish_at else None
