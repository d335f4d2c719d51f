"""The `run-batch-job` flow: prepare -> submit -> poll -> collect -> reconcile -> join.

With `wait=True` (the CLI's default) the flow waits in-process with a bounded poll loop
and backoff; with `wait=False` it submits and returns, leaving the run open in the
ledger for `grok-batch resume` or a collector to finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from flows.stages import (
    answer_task,
    collect_task,
    join_task,
    poll_task,
    prepare_task,
    reconcile_task,
    submit_task,
)
from tasks import runner
from tasks.infra.errors import GrokBatchError
from tasks.infra.ledger import Ledger, default_ledger_url, this_holder
from tasks.infra.table_io import TableSource
from tasks.providers.base import BatchProvider
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec
from tasks.stages.report import RunSummary, render_markdown

# Listeners get every Progress (the CLI draws a progress bar with them).
progress_listeners: list[Callable[[runner.Progress], None]] = []


def default_output(input_path: Path, data_dir: Path) -> Path:
    return data_dir / "outbox" / f"{input_path.stem}.parquet"


def _flow_run_name() -> str:
    params = flow_run.parameters
    job = params.get("job")
    job_name = job.name if isinstance(job, JobSpec) else (job or {}).get("name", "job")
    return f"{job_name} · {Path(str(params.get('input_path', '?'))).name}"


TASK_STAGES = runner.Stages(
    submit=submit_task, poll=poll_task, collect=collect_task, reconcile=reconcile_task, answer=answer_task
)


def advance_with_tasks(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> runner.Progress:
    """runner.advance, with each stage that has work to do run as a Prefect task."""
    return runner.advance(ledger, provider, handle, TASK_STAGES)


def finish_and_publish(
    ledger: Ledger, handle: runner.RunHandle, output_path: Path, overwrite: bool
) -> RunSummary:
    """Join, write output and report, and show the summary and report in the UI."""
    summary = join_task(ledger, handle, output_path, overwrite)
    publish_summary(summary, handle.run_key)
    return summary


def publish_summary(summary: RunSummary, run_key: str) -> None:
    counts = [{"status": s, "rows": n} for s, n in summary.by_status.items() if n]
    counts += [{"status": f"tokens: {k}", "rows": v} for k, v in summary.tokens.items()]
    counts += [
        {"status": "cost_usd", "rows": round(summary.cost_usd, 6)},
        {"status": "rounds (attempts)", "rows": summary.rounds},
    ]
    create_table_artifact(table=counts, key=f"grok-batch-summary-{run_key}", description="Rows by status")
    create_markdown_artifact(
        markdown=render_markdown(summary), key=f"grok-batch-report-{run_key}", description="Run report"
    )


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
    ledger = Ledger(default_ledger_url(data_root))
    try:
        handle = prepare_task(source, job, data_root / "runs", ledger, output_path, overwrite)
        try:
            provider = make_provider(job.provider, job.base_url)
        except BaseException:
            ledger.release(handle.run_key, this_holder())
            raise
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
        matches = ledger.find_runs(run_key)
        if len(matches) != 1:
            found = ", ".join(m["run_key"] for m in matches) or "none"
            raise GrokBatchError(
                f"run {run_key!r} matches {len(matches)} runs in {ledger.display_url} ({found})"
            )
        handle = runner.handle_for(ledger, matches[0]["run_key"])
        output_path = Path(output or matches[0]["output_path"])
        runner.check_output_path(output_path, overwrite)
        provider = make_provider(handle.job.provider, handle.job.base_url)
        ledger.claim(handle.run_key, this_holder(), runner.LEASE_S)
        policy = WaitPolicy(wait, poll_interval_s, max_poll_interval_s, max_wait_s)
        return _drive(ledger, provider, handle, output_path, overwrite, policy)
    finally:
        ledger.close()


@dataclass(frozen=True)
class WaitPolicy:
    """How a driver waits: in-process polling with backoff, bounded in time."""

    wait: bool = True
    poll_interval_s: float = 2.0
    max_poll_interval_s: float = 60.0
    max_wait_s: float = 26 * 3600.0


def _drive(
    ledger: Ledger,
    provider: BatchProvider,
    handle: runner.RunHandle,
    output_path: Path,
    overwrite: bool,
    policy: WaitPolicy,
) -> dict[str, Any]:
    """Advance the run (holding its lease) until it is finished or the wait ends."""
    holder = this_holder()
    try:
        artifact_id: Any = create_progress_artifact(
            progress=0.0, description=f"grok-batch run {handle.run_key}"
        )
        deadline = time.monotonic() + policy.max_wait_s
        interval = policy.poll_interval_s
        last_round = 0
        while True:
            progress = advance_with_tasks(ledger, provider, handle)
            update_progress_artifact(
                artifact_id=artifact_id,
                progress=100.0 * progress.fraction,
                description=(
                    f"round {progress.round_no}: {progress.finished}/{progress.requests} requests finished"
                ),
            )
            for listener in progress_listeners:
                listener(progress)
            if progress.complete:
                break
            if (not policy.wait and handle.plan.mode != "sync") or time.monotonic() >= deadline:
                return {"run_key": handle.run_key, "state": "pending", "progress": progress.__dict__}
            if progress.round_no != last_round:
                interval, last_round = policy.poll_interval_s, progress.round_no
            if handle.plan.mode == "sync":
                continue  # each pass did real work for a bounded time: nothing to wait for
            time.sleep(interval)
            interval = min(interval * 1.5, policy.max_poll_interval_s)
            ledger.claim(handle.run_key, holder, runner.LEASE_S)  # renew the lease while we work
        summary = finish_and_publish(ledger, handle, output_path, overwrite)
        return {"run_key": handle.run_key, "state": "finished", "summary": summary.as_dict()}
    finally:
        ledger.release(handle.run_key, holder)
