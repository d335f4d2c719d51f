"""How many collector passes a waiting run books: the bound the README states."""

from __future__ import annotations

import pytest

from flows.collect import pass_name
from flows.wakeups import MAX_DELAY_S, next_delay_s
from tasks.doors.collector import OUTCOMES


def test_a_two_hour_wait_books_at_most_forty_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROK_BATCH_COLLECT_MIN_DELAY_S", raising=False)
    started, clock, passes = 1_000.0, 1_000.0, 0
    delays = []
    while clock - started < 2 * 3600:
        delay = next_delay_s(started, now=clock)
        delays.append(delay)
        clock += delay
        passes += 1
    assert passes <= 40
    assert delays[0] == 10.0 and max(delays) == MAX_DELAY_S  # soon at first, then every 5 minutes
    assert delays == sorted(delays)  # never sooner than the pass before


def test_passes_are_named_for_what_they_did() -> None:
    idle: dict[str, list[str]] = {k: [] for k in OUTCOMES}
    assert pass_name(idle) == "collect · idle"
    busy = {**idle, "advanced": ["a", "b"], "woken": ["a"], "finished": ["b"]}
    assert pass_name(busy) == "collect · 2 runs advanced · 1 woken · 1 finished"
    assert pass_name({**idle, "advanced": ["a"]}) == "collect · 1 run advanced"
    assert pass_name({**idle, "not_reached": ["c", "d"]}) == "collect · 2 left for the next pass"
