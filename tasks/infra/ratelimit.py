"""Client-side pacing: requests and tokens per minute within a process (`RateLimiter`),
and calls per minute for the whole fleet, shared through the ledger (`FleetLimiter`).

A shared schedule (GCRA): each request reserves the next free start time, so requests
are at least 60/rpm seconds apart whatever the number of worker threads, and tokens
flow at tpm with one second of burst. A 429 pauses everyone, not just the worker that
heard it: the limit it reports is the team's, not the thread's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.infra.ledger import Ledger


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float,
        *,
        token_burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute <= 0 or tokens_per_minute <= 0:
            raise ValueError("rates must be positive")
        self.request_interval_s = 60.0 / requests_per_minute
        self.token_interval_s = 60.0 / tokens_per_minute
        self.token_burst_s = token_burst_s
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_request = 0.0  # earliest start of the next request
        self._token_tat = 0.0  # theoretical arrival time of the token stream
        self._paused_until = 0.0

    def reserve(self, tokens: int) -> float:
        """Book a start time for a request of `tokens`; returns seconds to wait for it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_request, self._token_tat - self.token_burst_s, self._paused_until)
            self._next_request = start + self.request_interval_s
            self._token_tat = max(self._token_tat, start) + max(tokens, 0) * self.token_interval_s
            return start - now

    def acquire(self, tokens: int, max_rebookings: int = 1000) -> None:
        """Wait for a start time; if a 429 paused everyone meanwhile, book again after it."""
        for _ in range(max_rebookings):
            delay = self.reserve(tokens)
            if delay > 0:
                self._sleep(delay)
            with self._lock:
                if self._clock() >= self._paused_until:
                    return

    def pause(self, seconds: float) -> None:
        """The service asked to slow down: nobody starts a request for `seconds`."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


@dataclass(frozen=True)
class FleetRate:
    """A limit every process writing the same ledger shares: `per_minute` calls (0: no
    limit), up to `burst` at once, counted under `name` (e.g. a provider and its server)."""

    name: str
    per_minute: float
    burst: int = 1


class FleetLimiter:
    """Takes slots of a FleetRate from the ledger (Ledger.take_slot), waiting for one in
    steps of at most `step_s`. Clock and sleep are wall time (slots are compared across
    machines) unless a test gives its own."""

    def __init__(
        self,
        ledger: Ledger,
        rate: FleetRate,
        *,
        step_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate.per_minute < 0 or rate.burst < 1:
            raise ValueError(f"a fleet rate needs per_minute >= 0 and burst >= 1, not {rate}")
        self.ledger, self.rate, self.step_s = ledger, rate, step_s
        self._clock, self._sleep = clock, sleep

    def acquire(self, max_wait_s: float, on_wait: Callable[[], None] = lambda: None) -> float | None:
        """Take a slot; the time (by the clock) it was taken at, or None when none came free
        within `max_wait_s` (nothing taken). `on_wait` runs after each step of waiting: a
        driver renews its run's lease there."""
        if self.rate.per_minute == 0:
            return self._clock()
        interval_s = 60.0 / self.rate.per_minute
        deadline = self._clock() + max_wait_s
        for _ in range(MAX_SLOT_ASKS):
            now = self._clock()
            until = self.ledger.take_slot(self.rate.name, now, interval_s, self.rate.burst)
            if until <= 0:
                return now
            if now + until > deadline:
                return None
            self._sleep(min(until, self.step_s))
            on_wait()
        return None


# Bounds a wait for a slot whatever the clock does (each ask waits until a slot may be free).
MAX_SLOT_ASKS = 100_000
