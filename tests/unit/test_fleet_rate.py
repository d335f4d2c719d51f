"""The fleet's rate, shared through the ledger: slots taken atomically (GCRA), the same
schedule for every Ledger object and thread, waits in bounded steps, and a clock the test
drives (no wall time is measured)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from tasks.infra.ledger import Ledger
from tasks.infra.ratelimit import FleetLimiter, FleetRate


class SharedClock:
    """A clock only sleeping moves: a sleeper wakes `d` after the time it last read, so two
    threads that wait at once wait together (as real time would), never one after the other."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.start = self.t = start
        self._lock = threading.Lock()
        self._read = threading.local()

    def now(self) -> float:
        with self._lock:
            self._read.t = self.t
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.t = max(self.t, getattr(self._read, "t", self.t) + seconds)


def test_a_slot_is_taken_once_per_interval_with_the_burst_up_front(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        assert ledger.take_slot("one-a-second", 100.0, 1.0) == 0.0  # the first ever: free
        assert ledger.take_slot("one-a-second", 100.0, 1.0) == pytest.approx(1.0)  # nothing taken
        assert ledger.take_slot("one-a-second", 100.5, 1.0) == pytest.approx(0.5)
        assert ledger.take_slot("one-a-second", 101.0, 1.0) == 0.0
        assert ledger.take_slot("one-a-second", 130.0, 1.0) == 0.0  # idle time is not saved up
        assert ledger.take_slot("one-a-second", 130.0, 1.0) == pytest.approx(1.0)
        # A burst of 3: three at once, then one per interval.
        assert [ledger.take_slot("bursty", 200.0, 2.0, burst=3) for _ in range(4)] == [0.0, 0.0, 0.0, 2.0]
        assert ledger.take_slot("bursty", 202.0, 2.0, burst=3) == 0.0
        assert ledger.take_slot("other", 100.0, 1.0) == 0.0  # each limit has its own schedule
    finally:
        ledger.close()


def test_two_ledgers_in_two_threads_share_one_schedule(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledgers = [Ledger(url), Ledger(url)]  # as two processes would: nothing shared in memory
    clock = SharedClock()
    rate = FleetRate("batch-create test", per_minute=120.0)  # a slot every 0.5 s
    taken: list[list[float]] = [[], []]

    def create(worker: int) -> None:
        limiter = FleetLimiter(ledgers[worker], rate, clock=clock.now, sleep=clock.sleep)
        for _ in range(15):
            slot = limiter.acquire(max_wait_s=3600.0)
            assert slot is not None
            taken[worker].append(slot)

    threads = [threading.Thread(target=create, args=(worker,)) for worker in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for ledger in ledgers:
        ledger.close()
    assert not any(thread.is_alive() for thread in threads)
    slots = sorted(taken[0] + taken[1])
    assert len(slots) == 30 and taken[0] and taken[1]
    gaps_in_slots = [(later - earlier) / 0.5 for earlier, later in itertools.pairwise(slots)]
    assert min(gaps_in_slots) >= 1 - 1e-9  # never two in one slot, whichever ledger asked
    assert (clock.t - clock.start) / 0.5 >= 29 - 1e-9  # 30 creations took 29 intervals, not 14


def test_a_wait_goes_in_bounded_steps_and_gives_up_past_its_limit(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    clock = SharedClock()
    rate = FleetRate("slow", per_minute=2.0)  # a slot every 30 s
    slept: list[float] = []
    renewals: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.sleep(seconds)

    try:
        limiter = FleetLimiter(ledger, rate, step_s=5.0, clock=clock.now, sleep=sleep)
        assert limiter.acquire(max_wait_s=60.0) == clock.start
        second = limiter.acquire(max_wait_s=60.0, on_wait=lambda: renewals.append(clock.t))
        assert second == clock.start + 30.0
        assert slept == [5.0] * 6 and len(renewals) == 6  # the lease renewed at every step
        slept.clear()
        assert limiter.acquire(max_wait_s=10.0) is None  # 30 s away: not waited for at all
        assert slept == []
        assert FleetLimiter(ledger, FleetRate("none", 0.0), clock=clock.now).acquire(0.0) == clock.t
    finally:
        ledger.close()
