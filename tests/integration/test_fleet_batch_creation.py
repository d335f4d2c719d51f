"""Batch creations keep to one rate for the whole fleet: two workers (two threads, each
with its own Ledger, as two machines would be) submitting runs against the same ledger and
the emulator take their creation slots from one schedule. Time is a clock the test drives:
spacing is counted in slots, never measured."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import RunningEmulator
from tasks import start
from tasks.infra.ledger import Ledger, RunBusyError, rate_slots_table
from tasks.infra.processes import this_holder
from tasks.infra.ratelimit import FleetLimiter
from tasks.infra.table_io import TableSource
from tasks.providers.registry import make_provider
from tasks.spec.job import build_job
from tasks.stages.submit import batch_create_rate, submit_planned
from tests.helpers import write_csv
from tests.integration.test_fleet_collect_pass import fresh_postgres
from tests.unit.test_fleet_rate import SharedClock

FLEET_DATABASE = "test_fleet_create"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield (
        f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        if request.param == "sqlite"
        else fresh_postgres(FLEET_DATABASE)
    )


def planned_run(ledger: Ledger, tmp_path: Path, name: str, shards: int) -> str:
    """A run prepared for real with `shards` planned shards (two rows each); its key."""
    source = write_csv(tmp_path / f"{name}.csv", [{"text": f"{name} row {i}"} for i in range(2 * shards)])
    job = build_job(None, {"model": "grok-4.3", "prompt": "Classify: {{ text }}", "shard_max_lines": 2})
    handle = start.start_run(
        TableSource(source), job, tmp_path / "runs", ledger, tmp_path / f"{name}.parquet"
    )
    assert len(ledger.batches(handle.run_key)) == shards
    return handle.run_key


def booked_until(ledger: Ledger, limit: str) -> float:
    with ledger.tx() as conn:
        return float(
            conn.execute(
                rate_slots_table.select()
                .with_only_columns(rate_slots_table.c.next_free)
                .where(rate_slots_table.c.limit_key == limit)
            ).scalar_one()
        )


def test_two_workers_creating_batches_keep_to_one_fleet_rate(
    ledger_url: str, tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GROK_BATCH_BATCH_CREATES_PER_MINUTE", raising=False)
    setup = Ledger(ledger_url)
    keys = [planned_run(setup, tmp_path, name, shards=2) for name in ("north", "south")]
    setup.close()
    ledgers = [Ledger(ledger_url), Ledger(ledger_url)]  # two workers: nothing shared in memory
    clock = SharedClock()
    rate = batch_create_rate(make_provider("xai"))
    assert (rate.per_minute, rate.burst) == (100.0, 1)  # xAI's documented 2/s per team, with a margin
    interval_s = 60.0 / rate.per_minute
    submitted: dict[str, int] = {}

    def worker(number: int) -> None:
        ledger, key = ledgers[number], keys[number]
        limiter = FleetLimiter(ledger, rate, clock=clock.now, sleep=clock.sleep)
        with ledger.lease(key):
            submitted[key] = submit_planned(ledger, make_provider("xai"), key, limiter=limiter)

    threads = [threading.Thread(target=worker, args=(number,)) for number in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert submitted == {keys[0]: 2, keys[1]: 2}
        assert emulator.state.count("POST", "/v1/batches", 200) == 4  # each batch created once
        # Four creations, one schedule: the fleet waited three slots, and booked four.
        assert (clock.t - clock.start) / interval_s >= 3 - 1e-9
        assert (booked_until(ledgers[0], rate.name) - clock.start) / interval_s >= 4 - 1e-9
        assert all(row.batch_id for key in keys for row in ledgers[1].batches(key))
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_run_that_finds_no_slot_leaves_its_shards_for_the_next_pass(
    tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROK_BATCH_BATCH_CREATES_PER_MINUTE", "6")  # a slot every 10 s
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        key = planned_run(ledger, tmp_path, "waits", shards=1)
        provider = make_provider("xai")
        rate = batch_create_rate(provider)
        assert (rate.per_minute, rate.burst) == (6.0, 1)
        clock = SharedClock()
        for slot in range(12):  # other workers have taken the next two minutes of slots
            assert ledger.take_slot(rate.name, clock.start + 10.0 * slot, 10.0) == 0.0
        limiter = FleetLimiter(ledger, rate, clock=clock.now, sleep=clock.sleep)
        with ledger.lease(key):
            assert submit_planned(ledger, provider, key, limiter=limiter, slot_wait_s=60.0) == 0
        assert emulator.state.count("POST", "/v1/batches", 200) == 0
        assert [row.step for row in ledger.batches(key)] == ["uploaded"]  # the next pass creates it

        # Waiting renews the lease at every step: a worker that lost the run meanwhile stops
        # before it pays for anything.
        def taken_over_while_asleep(seconds: float) -> None:
            clock.sleep(seconds)
            ledger.release(key, this_holder())
            ledger.claim(key, "elsewhere:1", 600)

        waiting = FleetLimiter(ledger, rate, clock=clock.now, sleep=taken_over_while_asleep)
        clock.t = clock.start + 100.0  # the last booked slot is 20 s away: worth waiting for
        with pytest.raises(RunBusyError, match="elsewhere:1"):
            submit_planned(ledger, provider, key, limiter=waiting, slot_wait_s=60.0)
        assert emulator.state.count("POST", "/v1/batches", 200) == 0

        ledger.release(key, "elsewhere:1")
        clock.t = clock.start + 200.0  # later, a pass with the fleet's slots free again
        with ledger.lease(key):
            assert submit_planned(ledger, provider, key, limiter=limiter) == 1
        assert emulator.state.count("POST", "/v1/batches", 200) == 1
        assert [row.step for row in ledger.batches(key)] == ["created"]
    finally:
        ledger.close()


def test_the_rate_setting_is_read_and_checked(
    monkeypatch: pytest.MonkeyPatch, emulator: RunningEmulator
) -> None:
    provider = make_provider("xai")
    monkeypatch.setenv("GROK_BATCH_BATCH_CREATES_PER_MINUTE", "0")
    assert batch_create_rate(provider).per_minute == 0.0  # no limit of ours
    assert emulator.url in batch_create_rate(provider).name  # one schedule per provider and server
    monkeypatch.setenv("GROK_BATCH_BATCH_CREATES_PER_MINUTE", "lots")
    with pytest.raises(Exception, match="GROK_BATCH_BATCH_CREATES_PER_MINUTE='lots' is not a number"):
        batch_create_rate(provider)
    monkeypatch.setenv("GROK_BATCH_BATCH_CREATES_PER_MINUTE", "-1")
    with pytest.raises(Exception, match="must be 0"):
        batch_create_rate(provider)
