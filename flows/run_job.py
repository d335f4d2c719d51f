"""The `run-batch-job` and `resume-batch-job` flows: thin wrappers that resolve settings,
hold the run's lease and drive it with the stage tasks (tasks.doors.drive).

With `wait=True` (the CLI's default) the flow waits in-process with a bounded poll loop
and backoff; with `wait=False` it submits and returns, leaving the run open in the
ledger for `grok-batch resume` or a collector to finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
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
from tasks import runner, start
from tasks.doors import inbox
from tasks.doors.admission import settle_dropped_file
from tasks.doors.control import find_run
from tasks.doors.drive import WaitPolicy, drive
from tasks.infra.errors import GrokBatchError, ProviderError
from tasks.infra.ledger import Attempt, Ledger, default_ledger_url
from tasks.infra.run_layout import data_root as data_root_of
from tasks.infra.table_io import TableSource
from tasks.lifecycle import RunState
from tasks.providers.base import BatchProvider
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec

# Listeners get every Progress (the CLI draws a progress bar with them).
progress_listeners: list[Callable[[runner.Progress], None]] = []


def default_output(input_path: Path, data_dir: Path) -> Path:
    return data_dir / "outbox" / f"{input_path.stem}.parquet"


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
        input_path: The table to run: a .csv or .parquet path the worker can read.
        job: The question for every row: model, prompt template, parameters.
        output: Where the output .parquet goes (default DATA_DIR/outbox/INPUT.parquet).
        overwrite: Replace the output if it exists (else an existing output stops the run).
        data_dir: Where runs and the ledger live (default $GROK_BATCH_DATA_DIR, else data).
        encoding: Text encoding of a CSV input.
    """
    logger = get_run_logger()
    data_root = data_root_of(data_dir)
    source = TableSource(Path(input_path), encoding=encoding)
    output_path = Path(output or job.output or default_output(source.path, data_root))
    runs_root = data_root / "runs"
    # Every check before the ledger and the service: a refused command changes nothing.
    checked = start.check(source, job, output_path, overwrite)
    provider = make_provider(checked.job.provider, checked.job.base_url)  # no API key: stops here
    ledger = Ledger(default_ledger_url(data_root))
    took_over = False
    try:
        handle = prepare_task(ledger, checked, runs_root)
        attempt = _attempt(handle, output_path, overwrite, data_root)
        # A resumed run may start while the pass that woke it is finishing with the run.
        with start.taken(ledger, handle, attempt, wait_s=30.0 if deployed() else 0.0):
            took_over = True
            logger.info(
                "run %s: %s rows, %s shard(s), mode %s%s",
                handle.run_key,
                handle.plan.total_rows,
                len(handle.plan.shards),
                handle.plan.mode,
                f" (auto: sync up to {job.auto_sync_max_rows} rows)" if job.mode == "auto" else "",
            )
            if deployed() and handle.plan.mode != "sync":
                result = _advance_or_wait(ledger, provider, handle, output_path, overwrite)
            else:  # in-process: the CLI, a notebook, a sync run (its work is here)
                policy = _LOCAL_WAIT.get() or WaitPolicy()
                result = _drive(ledger, provider, handle, output_path, overwrite, policy)
    except Exception as exc:
        run = ledger.run(checked.run_key) if took_over else None
        if run is not None:  # refused before it took the run over: nothing changed, nothing to chain on
            emit_run_event("failed", run, {"error": str(exc)[:500]})
            if deployed() and isinstance(exc, GrokBatchError) and not isinstance(exc, ProviderError):
                # The same verdict as the collector's: a person must look; the service errors
                # keep the run open for the next try.
                if run["state"] in (RunState.OPEN, RunState.COMPLETE):
                    ledger.update_run(run["run_key"], state=RunState.FAILED)
                settle_dropped_file(ledger, run, inbox.InboxLayout.under(data_root), exc)
        raise
    finally:
        ledger.close()
    if result["state"] == "waiting":
        suspend_flow_run(key=f"wait-{time.time_ns()}")  # the process exits; resumed from the top
    return result


def _attempt(handle: runner.RunHandle, output_path: Path, overwrite: bool, data_root: Path) -> Attempt:
    """This flow run's request: a file in the inbox's processing folder came through the inbox;
    a deployed run is asked for by its flow run (every resume is the same request)."""
    processing = inbox.InboxLayout.under(data_root).processing.resolve()
    origin = "inbox" if Path(handle.input).parent == processing else "deployment" if deployed() else "cli"
    attempt = start.attempt_of(handle, output_path, overwrite, origin)
    if deployed():
        attempt = replace(attempt, requested_by=f"flow run {current_flow_run_id()}")
    return attempt


def _layout_of(handle: runner.RunHandle) -> inbox.InboxLayout:
    return inbox.InboxLayout.under(handle.run_dir.parent.parent)  # DATA_DIR/runs/<run>


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
        settle_dropped_file(ledger, run, _layout_of(handle))
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
    ledger = Ledger(default_ledger_url(data_root_of(data_dir)))
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
