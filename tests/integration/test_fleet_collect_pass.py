"""Many runs at once: a collector pass over 1,000 open runs in a real ledger (SQLite and
PostgreSQL) advances them a bounded few at a time, each under its lease, and ends although
one run overruns its budget; runs a pass does not reach are left for the next one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks import runner, start
from tasks.doors import inbox
from tasks.doors.collector import PassLimits, collect_pass
from tasks.infra.ledger import Ledger, metadata, runs_table
from tasks.infra.processes import this_holder
from tasks.infra.table_io import TableSource
from tasks.providers.base import BatchProvider
from tasks.spec.job import build_job
from tests.helpers import write_csv
from tests.integration.test_ledger_sqlite_and_postgres import POSTGRES_URL, _postgres_available

pytestmark = pytest.mark.usefixtures("emulator")  # providers are made for real (key, server)

FLEET_DATABASE = "test_fleet_collect"  # its own database: other tests drop tables in `test`


def fresh_postgres(database: str) -> str:
    """A PostgreSQL database of its own for these tests, emptied; its URL."""
    if not _postgres_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            known = conn.execute(sa.text("select 1 from pg_database where datname = :d"), {"d": database})
            if known.first() is None:
                conn.execute(sa.text(f'create database "{database}"'))
    finally:
        admin.dispose()
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def shared_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """The ledger a fleet shares: PostgreSQL when it is reachable, else SQLite."""
    url = (
        fresh_postgres(FLEET_DATABASE) if _postgres_available() else f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    )
    opened = Ledger(url)
    yield opened
    opened.close()


def open_runs(ledger: Ledger, tmp_path: Path, count: int) -> list[str]:
    """`count` open runs: one prepared for real, the others its copies in the ledger (their
    own keys and leases, the same run directory), as an inbox full of drops would leave."""
    source = write_csv(tmp_path / "in.csv", [{"text": f"row {i}"} for i in range(3)])
    job = build_job(None, {"model": "grok-4.3", "prompt": "Classify: {{ text }}"})
    handle = start.start_run(TableSource(source), job, tmp_path / "runs", ledger, tmp_path / "out.parquet")
    now = time.time()
    copies = [
        dict(
            run_key=f"fleet{number:04d}",
            run_dir=str(handle.run_dir),
            input_path=str(source),
            job_name=job.name,
            provider=job.provider,
            output_path=str(tmp_path / f"out{number}.parquet"),
            overwrite=False,
            origin="inbox",
            state="open",
            round_no=1,
            cancel_requested=False,
            created_at=now,
            updated_at=now,
        )
        for number in range(1, count)
    ]
    with ledger.tx() as conn:
        conn.execute(runs_table.insert(), copies)
    return [r["run_key"] for r in ledger.open_runs()]


class Advances:
    """A real and cheap advance (who holds the run, and its progress, read from the ledger) that
    counts how many run at once. The first run it is given overruns (it waits till the test
    lets it go); the next `meet` runs wait for one another: they were advanced together."""

    def __init__(self, meet: int) -> None:
        self.lock = threading.Lock()
        self.running = self.most_at_once = self.calls = 0
        self.slow_key: str | None = None
        self.let_slow_go = threading.Event()
        self.meeting = threading.Barrier(meet) if meet else None
        self.meet = meet
        self.holders: dict[str, str | None] = {}

    def __call__(self, ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> runner.Progress:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.calls += 1
            order = self.calls
            if order == 1:
                self.slow_key = handle.run_key
        try:
            if order == 1:
                assert self.let_slow_go.wait(timeout=60), "the test never let the slow run go"
            elif self.meeting is not None and order <= self.meet + 1:
                self.meeting.wait(timeout=30)  # breaks (fails the pass) unless `meet` run at once
            self.holders[handle.run_key] = (ledger.run(handle.run_key) or {}).get("holder")
            return runner.progress_of(ledger, handle)
        finally:
            with self.lock:
                self.running -= 1


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_pass_over_a_thousand_runs_is_bounded_and_one_slow_run_holds_nobody(
    shared_ledger: Ledger, tmp_path: Path
) -> None:
    ledger = shared_ledger
    keys = open_runs(ledger, tmp_path, 1000)
    assert len(keys) == 1000
    ledger.claim(keys[-1], "elsewhere:1", 600)  # another worker drives this one
    limits = PassLimits(concurrency=8, run_budget_s=8.0, pass_budget_s=300.0)
    advance = Advances(meet=limits.concurrency - 1)

    outcome = collect_pass(ledger, inbox.InboxLayout.under(tmp_path / "data"), advance=advance, limits=limits)

    slow = advance.slow_key
    assert slow is not None and not advance.let_slow_go.is_set()  # the pass ended while it still ran
    assert outcome["overran"] == [slow]
    assert outcome["busy"] == [keys[-1]]
    assert outcome["advanced"] == [k for k in keys if k not in (slow, keys[-1])]  # 998, in ledger order
    assert outcome["not_reached"] == outcome["failed"] == outcome["unreachable"] == []
    assert advance.most_at_once == limits.concurrency  # reached (the meeting) and never passed
    assert set(advance.holders.values()) == {this_holder()}  # each advanced under its own lease
    held = {r["run_key"]: r["holder"] for r in ledger.find_runs("")}
    assert [k for k, holder in held.items() if holder == this_holder()] == [slow]  # the rest released

    advance.let_slow_go.set()  # the overrunning run ends in the background and lets its lease go
    wait_for(lambda: (ledger.run(slow) or {}).get("holder") is None)
    assert advance.holders[slow] == this_holder()


def test_runs_a_pass_does_not_reach_wait_for_the_next(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        keys = open_runs(ledger, tmp_path, 10)
        layout = inbox.InboxLayout.under(tmp_path / "data")
        stuck = threading.Event()

        def advance_stuck(
            ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle
        ) -> runner.Progress:
            assert stuck.wait(timeout=60), "the test never let the runs go"
            return runner.progress_of(ledger, handle)

        # Both workers stay busy past the pass's budget: the other eight never start.
        limits = PassLimits(concurrency=2, run_budget_s=3.0, pass_budget_s=2.0)
        outcome = collect_pass(ledger, layout, advance=advance_stuck, limits=limits)
        assert len(outcome["overran"]) == 2 and len(outcome["not_reached"]) == 8
        assert sorted(outcome["overran"] + outcome["not_reached"]) == sorted(keys)
        assert outcome["advanced"] == []
        in_a_pass = {k for k in keys if (ledger.run(k) or {}).get("holder")}
        assert in_a_pass == set(outcome["overran"])  # runs not reached were never leased

        stuck.set()
        wait_for(lambda: not any((ledger.run(k) or {}).get("holder") for k in keys))
        again = collect_pass(ledger, layout, advance=advance_stuck, limits=limits)
        assert again["advanced"] == keys and again["overran"] == again["not_reached"] == []
    finally:
        ledger.close()


def test_collector_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROK_BATCH_COLLECT_CONCURRENCY", raising=False)
    monkeypatch.delenv("GROK_BATCH_COLLECT_RUN_BUDGET_S", raising=False)
    monkeypatch.delenv("GROK_BATCH_COLLECT_PASS_BUDGET_S", raising=False)
    assert PassLimits.from_env() == PassLimits(concurrency=8, run_budget_s=120.0, pass_budget_s=300.0)
    monkeypatch.setenv("GROK_BATCH_COLLECT_CONCURRENCY", "32")
    monkeypatch.setenv("GROK_BATCH_COLLECT_RUN_BUDGET_S", "30")
    assert PassLimits.from_env() == PassLimits(concurrency=32, run_budget_s=30.0, pass_budget_s=300.0)
    monkeypatch.setenv("GROK_BATCH_COLLECT_CONCURRENCY", "0")
    with pytest.raises(Exception, match="must be positive"):
        PassLimits.from_env()
    monkeypatch.setenv("GROK_BATCH_COLLECT_CONCURRENCY", "eight")
    with pytest.raises(Exception, match="GROK_BATCH_COLLECT_CONCURRENCY='eight' is not a number"):
        PassLimits.from_env()
