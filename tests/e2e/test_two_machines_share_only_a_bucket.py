"""Two workers as two machines: each its own working directory, PREFECT_HOME, working copies and
machine name; in common only a bucket (SeaweedFS), the PostgreSQL ledger and one Prefect server.
Five jobs are dropped into the bucket's inbox; one machine is SIGKILLed (its whole process group)
while it drives a run. The other takes its runs over when their leases expire: every job
finishes, every batch is created exactly once, no row is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from emulator import RunningEmulator
from tasks.infra.ledger import Ledger
from tasks.infra.storage import locate
from tests.helpers import EMULATOR_KEY, review_rows, stop, write_csv
from tests.s3_server import RunningS3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
JOBS = 5
ROWS = 24
SHARD_LINES = 8  # three batches a job
LEASE_S = 6  # a dead machine's runs wait this long for another (300 s in production)
INTERVAL_S = 12  # two machines on 2 cores: each flow run is a process that imports Prefect (~3 s CPU)
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
FINAL = ("Completed", "Crashed", "Cancelled")  # never Running, Pending or Scheduled for good


@pytest.fixture
def team_ledger() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, dropped afterwards."""
    name = f"grok_two_machines_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed (.ci/run starts it): {exc}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _machine(name: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    home = tmp_path / name
    (home / "prefect-home").mkdir(parents=True)
    own = {
        **env,
        "PREFECT_HOME": str(home / "prefect-home"),
        "GROK_BATCH_WORK_DIR": str(home / "work"),
        "GROK_BATCH_WORKER_NAME": f"machine-{name}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--scan-interval", str(INTERVAL_S),
         "--collect-interval", str(INTERVAL_S), "--settle", "1"],
        cwd=home,
        env=own,
        stdout=(home / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its flow runs are its children: the kill takes them all
    )  # fmt: skip


def _job_runs(api_url: str) -> dict[str, str]:
    """The state of every run-job flow run (the jobs' homes), once none is left in a
    non-final state or 30 s have passed."""
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + 30
    while True:
        with SyncPrefectClient(api_url) as client:
            flow_id = client.read_flow_by_name("run-batch-job").id
            runs = [r for r in client.read_flow_runs(limit=200) if r.flow_id == flow_id]
        homes = {f"{r.name} ({r.id})": r.state.name if r.state else "" for r in runs}
        if all(state in FINAL for state in homes.values()) or time.monotonic() > deadline:
            return homes
        time.sleep(1)


def _logs(tmp_path: Path) -> str:
    logs = sorted(tmp_path.glob("*/serve.log"))
    return "\n".join(f"--- {log.parent.name} ---\n{log.read_text(errors='replace')[-2500:]}" for log in logs)


def test_five_jobs_finish_exactly_once_when_one_of_two_machines_dies(
    tmp_path: Path,
    prefect_server: dict[str, str],
    s3_server: RunningS3,
    emulator: RunningEmulator,
    team_ledger: str,
) -> None:
    emulator.configure(processing_s=3.0)  # runs wait at the service: machine a dies holding some
    root = s3_server.url(uuid.uuid4().hex, "grok")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GROK_BATCH_"))},
        **s3_server.env(),
        "PREFECT_API_URL": prefect_server["PREFECT_API_URL"],
        "XAI_BASE_URL": emulator.url,
        "XAI_API_KEY": EMULATOR_KEY,
        "GROK_BATCH_LEDGER_URL": team_ledger,
        "GROK_BATCH_DATA_DIR": root,
        "GROK_BATCH_LEASE_S": str(LEASE_S),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    os.environ.update(s3_server.env())  # this test process reads the bucket too
    started = time.monotonic()
    machines = {"a": _machine("a", tmp_path, env)}  # b joins once a drives a run: a surely has one
    ledger = Ledger(team_ledger)
    try:
        inbox = locate(f"{root}/inbox")
        inbox.child("default.job.yaml").write_text(
            "name: fleet\nmodel: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
            f"shard_max_lines: {SHARD_LINES}\n"
        )
        for job in range(JOBS):
            rows = [{**row, "text": f"{row['text']} (job {job})"} for row in review_rows(ROWS)]
            table = write_csv(tmp_path / f"reviews-{job}.csv", rows)  # five tables, five runs
            inbox.child(table.name).upload(table)

        # Both machines work; a is killed while it holds a run's lease with a batch created.
        killed_at = None
        deadline = time.monotonic() + 180
        while killed_at is None:
            assert time.monotonic() < deadline, "machine a never drove a run\n" + _logs(tmp_path)
            held = [r for r in ledger.open_runs() if (r.get("holder") or "").startswith("machine-a:")]
            if any(b.batch_id for r in held for b in ledger.batches(r["run_key"])):
                if "b" not in machines:
                    machines["b"] = _machine("b", tmp_path, env)
                    time.sleep(3)  # b scans and collects beside a for a while
                    continue
                os.killpg(machines["a"].pid, signal.SIGKILL)
                machines["a"].wait(timeout=10)
                killed_at = time.monotonic() - started
            time.sleep(0.2)

        outputs = [locate(f"{root}/outbox/reviews-{job}.parquet") for job in range(JOBS)]
        deadline = time.monotonic() + 300
        while not all(output.exists() for output in outputs):
            assert machines["b"].poll() is None, _logs(tmp_path)
            assert time.monotonic() < deadline, "not every job finished\n" + _logs(tmp_path)
            time.sleep(1)
        finished_at = time.monotonic() - started
    finally:
        for process in machines.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                stop(process)
        runs = ledger.find_runs("")
        batches = [b for r in runs for b in ledger.batches(r["run_key"])]
        ledger.close()

    for job, output in enumerate(outputs):
        table = pq.read_table(output.download(tmp_path / f"out-{job}.parquet"))
        assert table.num_rows == ROWS, output
        assert set(table.column("status").to_pylist()) == {"succeeded"}, output
    created = [batch.name for batch in emulator.state.xai.batches.values()]
    assert len(created) == len(set(created)), "a batch was created twice"
    assert len(runs) == JOBS and all(r["state"] == "finished" for r in runs)
    assert len(created) == len(batches) == JOBS * (ROWS // SHARD_LINES)  # one batch per shard
    assert {r["holder"] for r in runs} <= {None}  # every lease released
    archived = [loc.name for loc, _ in locate(f"{root}/archive").files()]
    assert len(archived) == JOBS
    # What the UI shows tells the truth: no job's flow run is left "Running" on the dead machine.
    homes = _job_runs(prefect_server["PREFECT_API_URL"])
    assert len(homes) >= JOBS and all(state in FINAL for state in homes.values()), homes
    print(  # the figures the closing note quotes (pytest -s)
        f"\ntwo machines: {JOBS} jobs, {JOBS * ROWS} rows, {len(created)} batches created for "
        f"{len(batches)} shards; machine a killed at {killed_at:.1f}s, all finished at {finished_at:.1f}s; "
        f"the jobs' flow runs: {sorted(Counter(homes.values()).items())}"
    )
