"""Prefect task wrappers over the plain stage functions (one task per lifecycle action),
and `advance` / `finish` built from them for the flows.

Every task uses NO_CACHE: each stage reads live state (files, ledger, the service)
and must run every time it is called, never return a cached result.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish_summary
from flows.events import emit_run_event
from tasks import runner, start
from tasks.infra.ledger import Ledger
from tasks.providers.base import BatchProvider
from tasks.stages.report import RunSummary


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(ledger: Ledger, checked: start.Checked, runs_root: Path) -> runner.RunHandle:
    return start.prepare(ledger, checked, runs_root)


@task(name="submit", cache_policy=NO_CACHE)
def submit_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> None:
    runner.PLAIN_STAGES.submit(ledger, provider, handle)


@task(name="poll", cache_policy=NO_CACHE)
def poll_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> None:
    runner.PLAIN_STAGES.poll(ledger, provider, handle)


@task(name="collect", cache_policy=NO_CACHE)
def collect_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> int:
    return runner.collect_finished(ledger, provider, handle)


@task(name="answer-sync", cache_policy=NO_CACHE)
def answer_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> int:
    return runner.answer_sync(ledger, provider, handle)


@task(name="close-unsent", cache_policy=NO_CACHE)
def close_unsent_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> None:
    runner.close_unsent(ledger, provider, handle)


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile_task(ledger: Ledger, handle: runner.RunHandle) -> bool:
    return runner.reconcile(ledger, handle)


@task(name="join", cache_policy=NO_CACHE)
def join_task(ledger: Ledger, handle: runner.RunHandle, output: Path, overwrite: bool) -> RunSummary:
    return runner.finish(ledger, handle, output, overwrite)


TASK_STAGES = runner.Stages(
    submit=submit_task,
    poll=poll_task,
    collect=collect_task,
    reconcile=reconcile_task,
    answer=answer_task,
    close_unsent=close_unsent_task,
)


def advance_with_tasks(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> runner.Progress:
    """runner.advance, with each action that has work to do run as a Prefect task."""
    return runner.advance(ledger, provider, handle, TASK_STAGES)


def finish_and_publish(
    ledger: Ledger, handle: runner.RunHandle, output_path: Path, overwrite: bool
) -> RunSummary:
    """Join, write output and report, show the summary and report in the UI, and tell
    whoever chains on `grok-batch.run.finished`."""
    summary = join_task(ledger, handle, output_path, overwrite)
    publish_summary(summary, handle.run_key)
    run = ledger.run(handle.run_key) or {}
    emit_run_event(
        "finished",
        {**run, "output_path": summary.output_path},
        {
            "rows": summary.rows,
            "by_status": {k: v for k, v in summary.by_status.items() if v},
            "cost_usd": round(summary.cost_usd, 6),
        },
    )
    return summary
