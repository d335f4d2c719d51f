"""Client-side pacing for synchronous requests: requests and tokens per minute.

A shared schedule (GCRA): each request reserves the next free start time, so requests
are at least 60/rpm seconds apart whatever the number of worker threads, and tokens
flow at tpm with one second of burst. A 429 pauses everyone, not just the worker that
heard it: the limit it reports is the team's, not the thread's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
