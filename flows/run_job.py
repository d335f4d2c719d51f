"""The `run-batch-job` and `resume-batch-job` flows: thin wrappers over the one code path
of every door (`tasks.doors.drive.run_job` / `resume_job`) with the stage tasks.

Deployed, a run-job is its job's home: it submits, suspends while the service works, and
is resumed to collect and join. Called in a process (the CLI with a Prefect server, a
notebook) it waits there with a bounded poll loop and backoff (`local_wait`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from pydantic import GetJsonSchemaHandler

from flows.artifacts import ProgressArtifact, progress_text
from flows.events import emit_run_event
from flows.stages import advance_with_tasks, finish_and_publish, prepare_task
from flows.wakeups import book_collector, current_flow_run_id, deployed, next_delay_s
from tasks import runner
from tasks.doors import inbox
from tasks.doors.admission import settle_dropped_file
from tasks.doors.drive import Driver, WaitPolicy, resume_job, run_job, waiting_driver
from tasks.infra.errors import GrokBatchError, ProviderError
from tasks.infra.ledger import Ledger
from tasks.infra.run_layout import data_root as data_root_of
from tasks.infra.table_io import open_table
from tasks.infra.work_copies import local_for
from tasks.lifecycle import RunState
from tasks.providers.base import BatchProvider
from tasks.spec.job import JobSpec

# Listeners get every Progress (the CLI draws a progress bar with them).
progress_listeners: list[Callable[[runner.Progress], None]] = []


@contextmanager
def listening(listener: Callable[[runner.Progress], None]) -> Iterator[None]:
    """Hand every Progress of the runs in this block to `listener` too."""
    progress_listeners.append(listener)
    try:
        yield
    finally:
        progress_listeners.remove(listener)


class _CatalogModels:
    """Lists the catalog's models as examples of the form's `model` field (the field stays a
    free string: a gateway may serve models the catalog does not know)."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> Any:
        from tasks.money.catalog import load_catalog

        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        target.get("properties", {}).get("model", {})["examples"] = sorted(load_catalog())
        return schema


FormJob = Annotated[JobSpec, _CatalogModels()]


def _flow_run_name() -> str:
    params = flow_run.parameters
    job = params.get("job")
    job_name = job.name if isinstance(job, JobSpec) else (job or {}).get("name", "job")
    return f"{job_name} · {Path(str(params.get('input_path', '?'))).name}"


# How a run that is not deployed waits (the CLI sets it): deployed runs suspend instead.
_LOCAL_WAIT: ContextVar[WaitPolicy | None] = ContextVar("grok_batch_local_wait", default=None)


@contextmanager
def local_wait(policy: WaitPolicy) -> Iterator[None]:
    """Run `run_batch_job` calls in this block with this in-process wait policy."""
    token = _LOCAL_WAIT.set(policy)
    try:
        yield
    finally:
        _LOCAL_WAIT.reset(token)


@flow(name="run-batch-job", flow_run_name=_flow_run_name, log_prints=True)
def run_batch_job(
    input_path: str,
    job: FormJob,
    output: str | None = None,
    overwrite: bool = False,
    data_dir: str | None = None,
    encoding: str = "utf-8",
) -> dict[str, Any]:
    """Run every row of a table through the job's model; write the table back as Parquet
    with an answer, usage, cost and status on every row.

    A deployed run is this job's home from start to Parquet: it submits, shows progress on
    this page, waits Suspended (holding no worker) while the service works, and is resumed
    by collect-pending to collect and join.

    Args:
        input_path: The table to run (.csv, .jsonl, .xlsx, .parquet): a path the worker can
            read or a URL (s3://bucket/reviews.csv).
        job: The question for every row: model, prompt template, parameters.
        output: Where the output .parquet goes, a path or a URL (default DATA_DIR/outbox/INPUT.parquet).
        overwrite: Replace the output if it exists (else an existing output stops the run).
        data_dir: Where runs and the ledger live (default $GROK_BATCH_DATA_DIR, else data).
        encoding: Text encoding of a CSV input.
    """
    data_root = data_root_of(data_dir)
    here = _waiting_driver(_LOCAL_WAIT.get() or WaitPolicy())

    def driver(
        ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle, output_path: Path, overwrite: bool
    ) -> dict[str, Any]:
        if deployed() and handle.plan.mode != "sync":
            return _advance_or_wait(ledger, provider, handle, output_path, overwrite)
        # in-process: the CLI, a notebook, a sync run (its work is here)
        return here(ledger, provider, handle, output_path, overwrite)

    result = run_job(
        open_table(input_path, encoding=encoding),  # a path or a URL (another machine's drop)
        job,
        local_for(output) if output else None,
        overwrite,
        data_root,
        driver,
        prepare=prepare_task,
        origin="deployment" if deployed() else "cli",
        requested_by=f"flow run {current_flow_run_id()}" if deployed() else None,
        # A resumed run may start while the pass that woke it is finishing with the run.
        lease_wait_s=30.0 if deployed() else 0.0,
        on_failed=_on_failed,
        log=get_run_logger(),
    )
    if result["state"] == "waiting":
        suspend_flow_run(key=f"wait-{time.time_ns()}")  # the process exits; resumed from the top
    return result


def _on_failed(ledger: Ledger, run: dict[str, Any], exc: Exception) -> None:
    emit_run_event("failed", run, {"error": str(exc)[:500]})
    if deployed() and isinstance(exc, GrokBatchError) and not isinstance(exc, ProviderError):
        # The same verdict as the collector's: a person must look; the service errors keep
        # the run open for the next try.
        if run["state"] in (RunState.OPEN, RunState.COMPLETE):
            ledger.update_run(run["run_key"], state=RunState.FAILED)
        settle_dropped_file(ledger, run, _layout_of(run["run_dir"]), exc)


def _layout_of(run_dir: str | Path) -> inbox.InboxLayout:
    """The inbox folders of a run's data root: DATA_DIR/runs/<run> (the ledger records it as
    its URL when the data is on a store)."""
    return inbox.InboxLayout.under(local_for(str(run_dir)).parent.parent)


def _advance_or_wait(
    ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle, output_path: Path, overwrite: bool
) -> dict[str, Any]:
    """One pass on the run's own page; finished, or recorded as waiting for its resume."""
    logger = get_run_logger()
    run = ledger.run(handle.run_key) or {}
    mine = run.get("flow_run_id") == current_flow_run_id() and run.get("progress_artifact_id")
    artifact = ProgressArtifact(handle.run_key, run["progress_artifact_id"] if mine else None)
    progress = advance_with_tasks(ledger, provider, handle)
    artifact(progress)
    if progress.complete:
        summary = finish_and_publish(ledger, handle, output_path, overwrite)
        ledger.update_run(handle.run_key, flow_run_id=None, progress_artifact_id=None)
        settle_dropped_file(ledger, run, _layout_of(handle.run_dir))
        return {"run_key": handle.run_key, "state": "finished", "summary": summary.as_dict()}
    if not mine:
        emit_run_event("submitted", run, {"rows": handle.plan.total_rows, "mode": handle.plan.mode})
    ledger.update_run(
        handle.run_key, flow_run_id=current_flow_run_id(), progress_artifact_id=str(artifact.artifact_id)
    )
    book_collector(next_delay_s(float(run.get("created_at") or time.time())), logger)
    logger.info(
        "run %s waits for the service (%s): suspended, holding no worker; collect-pending polls "
        "and resumes this flow run when there is work",
        handle.run_key,
        progress_text(progress),
    )
    return {"run_key": handle.run_key, "state": "waiting", "progress": progress.__dict__}


@flow(name="resume-batch-job", log_prints=True)
def resume_batch_job(
    run_key: str,
    output: str | None = None,
    overwrite: bool = False,
    wait: bool = True,
    data_dir: str | None = None,
    poll_interval_s: float = 2.0,
    max_poll_interval_s: float = 60.0,
    max_wait_s: float = 26 * 3600.0,
) -> dict[str, Any]:
    """Continue a run recorded in the ledger (after a crash, --no-wait, or a wait limit)."""
    policy = WaitPolicy(wait, poll_interval_s, max_poll_interval_s, max_wait_s)
    return resume_job(
        data_root_of(data_dir),
        run_key,
        local_for(output) if output else None,
        overwrite,
        _waiting_driver(policy),
    )


def _waiting_driver(policy: WaitPolicy) -> Driver:
    """Waits in this process with the stage tasks, publishing progress on this flow run."""
    artifacts: dict[str, ProgressArtifact] = {}

    def on_progress(progress: runner.Progress, run_key: str) -> None:
        if run_key not in artifacts:
            artifacts[run_key] = ProgressArtifact(run_key)
        artifacts[run_key](progress)
        for listener in progress_listeners:
            listener(progress)

    def driver(
        ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle, output_path: Path, overwrite: bool
    ) -> dict[str, Any]:
        return waiting_driver(
            policy,
            advance=advance_with_tasks,
            finish=finish_and_publish,
            on_progress=lambda progress: on_progress(progress, handle.run_key),
        )(ledger, provider, handle, output_path, overwrite)

    return driver
