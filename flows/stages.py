"""Prefect task wrappers over the plain stage functions (one task per stage).

Every task uses NO_CACHE: each stage reads live state (files, ledger, the service)
and must run every time it is called, never return a cached result.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import runner
from tasks.infra.ledger import Ledger
from tasks.infra.table_io import TableSource
from tasks.providers.base import BatchProvider
from tasks.spec.job import JobSpec
from tasks.stages.poll import poll_open
from tasks.stages.report import RunSummary
from tasks.stages.submit import submit_planned


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(
    source: TableSource,
    job: JobSpec,
    runs_root: Path,
    ledger: Ledger,
    output: Path,
    overwrite: bool,
    origin: str = "cli",
    input_sha: str | None = None,
) -> runner.RunHandle:
    return runner.start_run(source, job, runs_root, ledger, output, overwrite, origin, input_sha)


@task(name="submit", cache_policy=NO_CACHE)
def submit_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> int:
    return submit_planned(ledger, provider, handle.run_key)


@task(name="poll", cache_policy=NO_CACHE)
def poll_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> None:
    poll_open(ledger, provider, handle.run_key)


@task(name="collect", cache_policy=NO_CACHE)
def collect_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> int:
    return runner.collect_finished(ledger, provider, handle)


@task(name="answer-sync", cache_policy=NO_CACHE)
def answer_task(ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle) -> int:
    return runner.answer_sync(ledger, provider, handle)


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile_task(ledger: Ledger, handle: runner.RunHandle) -> bool:
    return runner.reconcile(ledger, handle)


@task(name="join", cache_policy=NO_CACHE)
def join_task(ledger: Ledger, handle: runner.RunHandle, output: Path, overwrite: bool) -> RunSummary:
    return runner.finish(ledger, handle, output, overwrite)
