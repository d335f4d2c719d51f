"""A deployed run-job is its job's home on a real `prefect server start`: seen Suspended with
no process of it alive while the service works, then Completed with its summary, usage,
report and progress artifacts on its own flow run; the flow runs it causes stay within a
stated bound. Served by `grok-batch serve`, and by a process work pool's worker after
`serve` was killed mid-run (no run waits on a concurrency slot). A bad inbox file ends its
scan Failed; a good drop's home is a run-job flow run of its own; a grok-batch.run.finished
automation starts a deployment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tests.helpers import EMULATOR_KEY, stop, write_csv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ROWS = 30
# run-job itself, and a collector pass per booked slot: the first passes come every
# GROK_BATCH_COLLECT_MIN_DELAY_S (2 s here) while the batch takes ~8 s, plus the pass that
# wakes the run. Stated bound for this job (README: a 2-hour job books at most ~40 passes).
MAX_FLOW_RUNS = 12


def _env(
    prefect_server: dict[str, str], emulator: RunningEmulator, data: Path, stuck_s: float = 60
) -> dict[str, str]:
    return {
        **os.environ,
        **prefect_server,
        "XAI_BASE_URL": emulator.url,
        "XAI_API_KEY": EMULATOR_KEY,
        "GROK_BATCH_DATA_DIR": str(data),
        "GROK_BATCH_COLLECT_MIN_DELAY_S": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "GROK_BATCH_STUCK_HOME_S": str(stuck_s),  # a resumed home nobody starts is taken over
    }


def _client_call(api_url: str, call: Callable[[Any], Any]) -> Any:
    from prefect.client.orchestration import PrefectClient

    async def go() -> Any:
        async with PrefectClient(api_url) as client:
            return await call(client)

    return asyncio.run(go())


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{tail}"
        time.sleep(0.5)


def _processes_of(flow_run_id: str) -> list[int]:
    """PIDs whose environment names this flow run (how Prefect starts a flow-run process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            found.append(int(entry.name))
    return found


@contextmanager
def _process(
    args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process)


def _serve(env: dict[str, str], log: Path) -> list[str]:
    # The intervals are backstops out of the way: waiting runs must book their own passes.
    return [
        sys.executable,
        "-m",
        "flows.cli",
        "serve",
        "--scan-interval",
        "3600",
        "--collect-interval",
        "3600",
    ]


def _start_job(api_url: str, src: Path, out: Path) -> str:
    async def call(client: Any) -> str:
        deployment = await client.read_deployment_by_name("run-batch-job/run-job")
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "input_path": str(src),
                "job": {"name": "home", "model": "grok-4.3", "prompt": "Classify: {{ text }}"},
                "output": str(out),
            },
        )
        return str(flow_run.id)

    return str(_client_call(api_url, call))


def _state(api_url: str, flow_run_id: str) -> str:
    async def call(client: Any) -> str:
        return str((await client.read_flow_run(UUID(flow_run_id))).state.type.value)

    return str(_client_call(api_url, call))


def _deployment_exists(api_url: str, name: str) -> bool:
    async def call(client: Any) -> bool:
        try:
            await client.read_deployment_by_name(name)
        except Exception:
            return False
        return True

    return bool(_client_call(api_url, call))


def _history_and_artifacts(api_url: str, flow_run_id: str) -> tuple[list[str], list[Any]]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def call(client: Any) -> tuple[list[str], list[Any]]:
        states = await client.read_flow_run_states(UUID(flow_run_id))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )
        return [s.name for s in states], artifacts

    result: tuple[list[str], list[Any]] = _client_call(api_url, call)
    return result


def _flow_runs_since(api_url: str, since: float) -> list[Any]:
    """Flow runs that have left Scheduled and started since `since` (interval schedules book
    many future runs long before they are due; those are not what a test counts)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    not_scheduled = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))
    )

    async def call(client: Any) -> list[Any]:
        runs = await client.read_flow_runs(flow_run_filter=not_scheduled, limit=200)
        return [r for r in runs if (r.start_time or r.expected_start_time or r.created).timestamp() >= since]

    result: list[Any] = _client_call(api_url, call)
    return result


def _check_home(
    api_url: str, flow_run_id: str, out: Path, emulator: RunningEmulator, since: float, batches: int = 1
) -> None:
    table = pq.read_table(out)
    assert table.num_rows == ROWS and set(table.column("status").to_pylist()) == {"succeeded"}
    # Resumed from the top: not resubmitted.
    assert emulator.state.count("POST", "/v1/batches", 200) == batches
    history, artifacts = _history_and_artifacts(api_url, flow_run_id)
    assert "Suspended" in history and history[-1] == "Completed", history
    assert history.index("Suspended") < len(history) - 1
    kinds = {(a.type, (a.key or "").split("-")[2] if a.key else "") for a in artifacts}
    assert {("table", "summary"), ("table", "usage"), ("markdown", "report")} <= kinds, kinds
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1 and progress[0].data == 100.0  # one bar, updated in place
    runs = _flow_runs_since(api_url, since)
    assert len(runs) <= MAX_FLOW_RUNS, sorted(r.name for r in runs)
    # Every run that ran says what it is: the job's home, or a pass named for what it did.
    ran = [r for r in runs if r.state and r.state.type.value != "PENDING"]
    names = sorted(r.name for r in ran)
    assert all(name.startswith(("collect · ", "scan · ", "home · ")) for name in names), names
    waiting = [r for r in runs if r.state and r.state.type.value in ("PENDING", "SCHEDULED", "RUNNING")]
    assert not [r for r in waiting if r.state.name == "AwaitingConcurrencySlot"]


def test_served_run_job_waits_suspended_and_finishes_on_its_own_page(
    tmp_path: Path, prefect_server: dict[str, str], emulator: RunningEmulator
) -> None:
    emulator.configure(processing_s=8.0)
    api_url = prefect_server["PREFECT_API_URL"]
    data = tmp_path / "data"
    src = write_csv(tmp_path / "reviews.csv", [{"text": f"great product {i}"} for i in range(ROWS)])
    out = tmp_path / "reviews.parquet"
    log = tmp_path / "serve.log"
    env = _env(prefect_server, emulator, data)
    with _process(_serve(env, log), env, log):
        _wait_for(
            "deployments", lambda: _deployment_exists(api_url, "collect-pending/collect-pending"), 60, log
        )
        since = time.time()
        flow_run_id = _start_job(api_url, src, out)
        _wait_for("Suspended", lambda: _state(api_url, flow_run_id) == "PAUSED", 60, log)
        # Its process exits once suspended: nothing of it runs while the service works.
        _wait_for("the flow-run process to exit", lambda: not _processes_of(flow_run_id), 20, log)
        assert _state(api_url, flow_run_id) == "PAUSED" and not out.exists()
        _wait_for("Completed", lambda: _state(api_url, flow_run_id) == "COMPLETED", 90, log)
    _check_home(api_url, flow_run_id, out, emulator, since)
    printed = log.read_text(errors="replace")
    assert "flow run" in printed and "requests finished" in printed  # serve says what it does


def test_a_worker_finishes_the_job_after_serve_was_killed_mid_run_and_homes_jobs_itself(
    tmp_path: Path, prefect_server: dict[str, str], emulator: RunningEmulator
) -> None:
    emulator.configure(processing_s=8.0)
    api_url = prefect_server["PREFECT_API_URL"]
    data = tmp_path / "data"
    src = write_csv(tmp_path / "reviews.csv", [{"text": f"fine thing {i}"} for i in range(ROWS)])
    out = tmp_path / "reviews.parquet"
    env = _env(prefect_server, emulator, data, stuck_s=10)
    serve_log = tmp_path / "serve.log"
    served = subprocess.Popen(
        _serve(env, serve_log), env=env, cwd=ROOT, stdout=serve_log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        _wait_for("deployments", lambda: _deployment_exists(api_url, "collect-pending/collect-pending"), 60)
        since = time.time()
        flow_run_id = _start_job(api_url, src, out)
        _wait_for("Suspended", lambda: _state(api_url, flow_run_id) == "PAUSED", 60, serve_log)
    finally:
        served.send_signal(signal.SIGKILL)
        served.wait()
    # The team path: a process work pool, the project's deployments on it, one worker.
    cli = [sys.executable, "-m", "prefect"]
    subprocess.run(
        [*cli, "work-pool", "create", "grok-batch", "--type", "process"], env=env, check=True, cwd=ROOT
    )
    deployed = subprocess.run(
        [*cli, "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    worker_log = tmp_path / "worker.log"
    worker = [*cli, "worker", "start", "--pool", "grok-batch", "--prefetch-seconds", "2"]
    with _process(worker, env, worker_log):
        # The run booked its next collector pass on the served deployment, which no worker
        # runs; the deployed backstop interval comes later. An operator kicks one pass (the
        # README says so); from then on passes book themselves on the pool.
        subprocess.run(
            [*cli, "deployment", "run", "collect-pending/collect-pending"], env=env, check=True, cwd=ROOT
        )
        try:
            _wait_for("the output", out.exists, 150, worker_log)
        except AssertionError:
            seen = [(r.name, r.state_name, r.work_pool_name) for r in _flow_runs_since(api_url, since)]
            raise AssertionError(
                f"{[s for s in seen if s[1] != 'Scheduled']}\n{worker_log.read_text()[-3000:]}"
            ) from None
        table = pq.read_table(out)
        assert table.num_rows == ROWS and set(table.column("status").to_pylist()) == {"succeeded"}
        assert emulator.state.count("POST", "/v1/batches", 200) == 1  # taken over, not resubmitted
        runs = _flow_runs_since(api_url, since)
        assert not [r for r in runs if r.state_name == "AwaitingConcurrencySlot"]
        # The served home was resumed but nothing could pick it up: it is cancelled with the
        # reason, and a pass on the pool finished the job (named for it).
        home = next(r for r in runs if str(r.id) == flow_run_id)
        assert home.state_name == "Cancelled" and "collect-pending finished the job" in (
            home.state.message or ""
        )
        assert any("finished" in r.name for r in runs if r.name.startswith("collect · ")), [
            r.name for r in runs
        ]
        # A job started on the pool's deployment waits Suspended (no process of it, no
        # worker slot) and ends Completed on its own page, like a served one.
        since = time.time()
        more = write_csv(tmp_path / "more.csv", [{"text": f"more thing {i}"} for i in range(ROWS)])
        more_out = tmp_path / "more.parquet"
        pooled = _start_job(api_url, more, more_out)
        _wait_for("Suspended on the pool", lambda: _state(api_url, pooled) == "PAUSED", 120, worker_log)
        _wait_for("the flow-run process to exit", lambda: not _processes_of(pooled), 30, worker_log)
        _wait_for("Completed on the pool", lambda: _state(api_url, pooled) == "COMPLETED", 150, worker_log)
    _check_home(api_url, pooled, more_out, emulator, since, batches=2)


def _create_automation(api_url: str, deployment_name: str, marker: float) -> None:
    from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment

    async def call(client: Any) -> None:
        target = await client.read_deployment_by_name(deployment_name)
        await client.create_automation(
            AutomationCore(
                name="after grok-batch runs",
                trigger=EventTrigger(
                    expect={"grok-batch.run.finished"}, posture=Posture.Reactive, threshold=1, within=0
                ),
                actions=[
                    RunDeployment(source="selected", deployment_id=target.id, parameters={"settle_s": marker})
                ],
            )
        )

    _client_call(api_url, call)


def test_a_bad_drop_fails_its_scan_and_a_finished_run_triggers_a_deployment(
    tmp_path: Path, prefect_server: dict[str, str], emulator: RunningEmulator
) -> None:
    api_url = prefect_server["PREFECT_API_URL"]
    data = tmp_path / "data"
    env = _env(prefect_server, emulator, data)
    log = tmp_path / "serve.log"
    serve = [*_serve(env, log)[:4], "--scan-interval", "10", "--collect-interval", "3600", "--settle", "0"]
    marker = 4321.5  # what the automation passes to the deployment it starts
    with _process(serve, env, log):
        _wait_for("deployments", lambda: _deployment_exists(api_url, "scan-inbox/scan-inbox"), 60, log)
        _create_automation(api_url, "scan-inbox/scan-inbox", marker)
        time.sleep(5)  # the server's trigger service picks new automations up on its next refresh
        since = time.time()
        inbox = data / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "bad.csv").write_text("text\n")  # a header and no rows

        def scans(state: str) -> list[Any]:
            runs = _flow_runs_since(api_url, since)
            return [r for r in runs if r.name.startswith("scan") and r.state_name == state]

        failed = _wait_for("a Failed scan", lambda: scans("Failed"), 60, log)
        assert "bad.csv" in (failed[0].state.message or "") and (data / "failed" / "bad.error.md").exists()
        # A good drop's home is a run-job flow run of its own, like a job started in the UI.
        (inbox / "good.job.yaml").write_text("name: chained\nmodel: grok-4.3\nprompt: 'Say: {{ text }}'\n")
        write_csv(inbox / "good.csv", [{"text": f"t{i}"} for i in range(5)])
        homes = _wait_for(
            "the dropped file's run-job to complete",
            lambda: [
                r
                for r in _flow_runs_since(api_url, since)
                if r.name.startswith("chained · good--") and r.state_name == "Completed"
            ],
            120,
            log,
        )
        assert len(homes) == 1 and (data / "outbox" / "good.parquet").exists()
        assert list((data / "archive").glob("good--*.csv"))
        _, artifacts = _history_and_artifacts(api_url, str(homes[0].id))
        assert {"summary", "usage", "report"} <= {(a.key or "").split("-")[2] for a in artifacts if a.key}

        def chained() -> list[Any]:
            return [r for r in _flow_runs_since(api_url, since) if r.parameters.get("settle_s") == marker]

        assert _wait_for("the automation's run", chained, 90, log)
