"""The ledger on SQLite and on PostgreSQL (the shared-ledger mode)."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from emulator import RunningEmulator
from tasks.infra.ledger import Attempt, Ledger, RunBusyError, metadata
from tasks.spec.job import build_job
from tests.helpers import run_to_end, write_csv

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_available() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    if not _postgres_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    engine = sa.create_engine(POSTGRES_URL)
    metadata.drop_all(engine)
    engine.dispose()
    yield POSTGRES_URL


def test_runs_batches_and_intent_steps(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ensure_run("k1", "/runs/k1", "job", "xai", Attempt("/in.csv", "/out.parquet"))
    ledger.ensure_run("k1", "/runs/k1", "job", "xai", Attempt("/in.csv", "/out2.parquet"))  # idempotent
    assert ledger.run("k1")["output_path"] == "/out.parquet"  # only a take-over changes what it writes
    ledger.take_over("k1", Attempt("/copy.csv", "/out2.parquet", origin="inbox", requested_by="me"))
    ledger.take_over("k1", Attempt("/copy.csv", "/out2.parquet", origin="inbox", requested_by="me"))
    run = ledger.run("k1")
    assert (run["input_path"], run["output_path"], run["origin"]) == ("/copy.csv", "/out2.parquet", "inbox")
    history = [(a["input_path"], a["output_path"], a["requested_by"]) for a in ledger.attempts("k1")]
    assert history == [("/copy.csv", "/out2.parquet", "me")]  # the same request again is one attempt
    ledger.plan_batches("k1", 1, [(0, "/s0", 10), (1, "/s1", 5)])
    ledger.plan_batches("k1", 1, [(0, "/other", 99)])  # existing shards are kept as they are
    rows = ledger.batches("k1")
    assert [(r.shard_no, r.shard_path, r.lines, r.step) for r in rows] == [
        (0, "/s0", 10, "planned"),
        (1, "/s1", 5, "planned"),
    ]
    ledger.update_batch(rows[0].batch_name, step="uploading")  # the lifecycle's order
    ledger.update_batch(rows[0].batch_name, step="uploaded", file_id="file_1")
    ledger.update_batch(rows[0].batch_name, step="creating")
    reopened = Ledger(ledger_url)  # a new process sees what was committed
    assert reopened.batches("k1")[0].step == "creating" and reopened.batches("k1")[0].file_id == "file_1"
    assert [r["run_key"] for r in reopened.open_runs()] == ["k1"]
    reopened.close()
    ledger.close()


def test_lease_excludes_a_second_holder_and_survives_a_dead_one(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.ensure_run("k2", "/runs/k2", "job", "xai", Attempt("/in.csv", "/o.parquet"))
    ledger.claim("k2", "host-a:1", 60)
    ledger.claim("k2", "host-a:1", 60)  # renewing is fine
    with pytest.raises(RunBusyError, match="being worked on by host-a:1"):
        ledger.claim("k2", "host-b:2", 60)
    ledger.release("k2", "host-a:1")
    ledger.claim("k2", "host-b:2", 60)
    # A holder process on this machine that no longer exists loses its lease at once.
    import socket

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_holder = f"{socket.gethostname()}:{dead.stdout.strip()}"
    ledger.release("k2", "host-b:2")
    ledger.claim("k2", dead_holder, 600)
    ledger.claim("k2", "host-c:3", 60)
    assert ledger.run("k2")["holder"] == "host-c:3"
    ledger.close()


def test_pipeline_runs_on_the_configured_ledger(
    tmp_path: Path, emulator: RunningEmulator, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROK_BATCH_LEDGER_URL", ledger_url)
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(20)])
    summary = run_to_end(
        src,
        build_job(None, {"model": "grok-4.3", "prompt": "{{ text }}"}),
        tmp_path / "d",
        tmp_path / "o.parquet",
    )[0]
    assert summary.by_status["succeeded"] == 20 and pq.read_table(tmp_path / "o.parquet").num_rows == 20
    ledger = Ledger(ledger_url)
    assert ledger.run(summary.run_key)["state"] == "finished"
    ledger.close()


def test_the_same_run_started_at_the_same_moment_is_recorded_once(ledger_url: str) -> None:
    """Many first starts of the same runs at once: no IntegrityError reaches a command."""
    import threading

    ledgers = [Ledger(ledger_url) for _ in range(6)]
    errors: list[BaseException] = []
    for key in (f"race-{i}" for i in range(15)):
        barrier = threading.Barrier(len(ledgers))

        def start(ledger: Ledger, key: str = key, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                ledger.ensure_run(key, f"/runs/{key}", "job", "xai", Attempt("/in.csv", "/out.parquet"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(ledger,)) for ledger in ledgers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert ledgers[0].run(key) is not None
    assert errors == []
    assert len(ledgers[0].find_runs("race-")) == 15
    for ledger in ledgers:
        ledger.close()
