"""The `run-batch-job` and `resume-batch-job` flows: thin wrappers that resolve settings,
hold the run's lease and drive it with the stage tasks (tasks.doors.drive).

With `wait=True` (the CLI's default) the flow waits in-process with a bounded poll loop
and backoff; with `wait=False` it submits and returns, leaving the run open in the
ledger for `grok-batch resume` or a collector to finish.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.artifacts import ProgressArtifact
from flows.stages import advance_with_tasks, finish_and_publish, prepare_task
from tasks import runner
from tasks.doors.control import find_run
from tasks.doors.drive import WaitPolicy, drive
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.providers.base import BatchProvider
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec

# Listeners get every Progress (the CLI draws a progress bar with them).
progress_listeners: list[Callable[[runner.Progress], None]] = []


def default_output(input_path: Path, data_dir: Path) -> Path:
    return data_dir / "outbox" / f"{input_path.stem}.parquet"


def _flow_run_name() -> str:
    params = flow_run.parameters
    job = params.get("job")
    job_name = job.name if isinstance(job, JobSpec) else (job or {}).get("name", "job")
    return f"{job_name} · {Path(str(params.get('input_path', '?'))).name}"


@flow(name="run-batch-job", flow_run_name=_flow_run_name, log_prints=True)
def run_batch_job(
    input_path: str,
    job: JobSpec,
    output: str | None = None,
    overwrite: bool = False,
    wait: bool = True,
    data_dir: str = "data",
    encoding: str = "utf-8",
    poll_interval_s: float = 2.0,
    max_poll_interval_s: float = 60.0,
    max_wait_s: float = 26 * 3600.0,
) -> dict[str, Any]:
    """Run every row of INPUT through the job's model as a batch; write the table back with
    an answer, usage, cost and status on every row."""
    logger = get_run_logger()
    data_root = Path(data_dir)
    source = TableSource(Path(input_path), encoding=encoding)
    output_path = Path(output or job.output or default_output(source.path, data_root))
    runs_root = data_root / "runs"
    ledger = Ledger(default_ledger_url(data_root))
    try:
        key = runner.register_run(source, job, runs_root, ledger, output_path, overwrite)
        with ledger.lease(key):
            handle = prepare_task(ledger, key, source, job, runs_root)
            provider = make_provider(job.provider, job.base_url)
            logger.info(
                "run %s: %s rows, %s shard(s), mode %s%s",
                handle.run_key,
                handle.plan.total_rows,
                len(handle.plan.shards),
                handle.plan.mode,
                f" (auto: sync up to {job.auto_sync_max_rows} rows)" if job.mode == "auto" else "",
            )
            policy = WaitPolicy(wait, poll_interval_s, max_poll_interval_s, max_wait_s)
            return _drive(ledger, provider, handle, output_path, overwrite, policy)
    finally:
        ledger.close()


@flow(name="resume-batch-job", log_prints=True)
def resume_batch_job(
    run_key: str,
    output: str | None = None,
    overwrite: bool = False,
    wait: bool = True,
    data_dir: str = "data",
    poll_interval_s: float = 2.0,
    max_poll_interval_s: float = 60.0,
    max_wait_s: float = 26 * 3600.0,
) -> dict[str, Any]:
    """Continue a run recorded in the ledger (after a crash, --no-wait, or a wait limit)."""
    ledger = Ledger(default_ledger_url(Path(data_dir)))
    try:
        run = find_run(ledger, run_key)
        handle = runner.handle_for(ledger, run["run_key"])
        output_path = Path(output or run["output_path"])
        runner.check_output_path(output_path, overwrite)
        provider = make_provider(handle.job.provider, handle.job.base_url)
        with ledger.lease(handle.run_key):
            policy = WaitPolicy(wait, poll_interval_s, max_poll_interval_s, max_wait_s)
            return _drive(ledger, provider, handle, output_path, overwrite, policy)
    finally:
        ledger.close()


def _drive(
    ledger: Ledger,
    provider: BatchProvider,
    handle: runner.RunHandle,
    output_path: Path,
    overwrite: bool,
    policy: WaitPolicy,
) -> dict[str, Any]:
    artifact = ProgressArtifact(handle.run_key)

    def on_progress(progress: runner.Progress) -> None:
        artifact(progress)
        for listener in progress_listeners:
            listener(progress)

    return drive(
        ledger,
        provider,
        handle,
        output_path,
        overwrite,
        policy,
        advance=advance_with_tasks,
        finish=finish_and_publish,
        on_progress=on_progress,
    )
