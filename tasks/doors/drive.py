"""One command's run, from table to Parquet: check, prepare, take the run over, drive it.

`run_job` and `resume_job` are the one code path of every door: the CLI calls them with the
plain stages (no Prefect at all when no Prefect server is configured), the run-job and
resume flows with their Prefect task versions, a listener that publishes progress, and (when
deployed) a driver that suspends instead of waiting. `drive` waits in this process with a
bounded poll loop and backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tasks import runner, start
from tasks.doors import inbox
from tasks.doors.control import find_run
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.logs import LOGGER, Log
from tasks.infra.table_io import TableSource
from tasks.infra.work_copies import local_for
from tasks.providers.base import BatchProvider
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec
from tasks.stages.report import RunSummary

Advance = Callable[[Ledger, BatchProvider, runner.RunHandle], runner.Progress]
Finish = Callable[[Ledger, runner.RunHandle, Path, bool], RunSummary]
Prepare = Callable[[Ledger, start.Checked, Path], runner.RunHandle]
# Carries a taken run on: waits for it here, or (a deployed flow run) suspends until woken.
Driver = Callable[[Ledger, BatchProvider, runner.RunHandle, Path, bool], dict[str, Any]]
# Told when a run this command had taken over fails (events, a deployed run's verdict).
OnFailed = Callable[[Ledger, dict[str, Any], Exception], None]


@dataclass(frozen=True)
class WaitPolicy:
    """How a driver waits: in-process polling with backoff, bounded in time."""

    wait: bool = True
    poll_interval_s: float = 2.0
    max_poll_interval_s: float = 60.0
    max_wait_s: float = 26 * 3600.0


def drive(
    ledger: Ledger,
    provider: BatchProvider,
    handle: runner.RunHandle,
    output_path: Path,
    overwrite: bool,
    policy: WaitPolicy,
    *,
    advance: Advance = runner.advance,
    finish: Finish = runner.finish,
    on_progress: Callable[[runner.Progress], None] = lambda _progress: None,
) -> dict[str, Any]:
    """Advance the run until it is finished or the wait ends; the caller holds the lease
    (renewed here between polls). Returns {run_key, state: finished|pending, ...}."""
    deadline = time.monotonic() + policy.max_wait_s
    interval = policy.poll_interval_s
    last_round = 0
    while True:
        progress = advance(ledger, provider, handle)
        on_progress(progress)
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
        ledger.renew(handle.run_key)
    summary = finish(ledger, handle, output_path, overwrite)
    return {"run_key": handle.run_key, "state": "finished", "summary": summary.as_dict()}


def waiting_driver(
    policy: WaitPolicy,
    *,
    advance: Advance = runner.advance,
    finish: Finish = runner.finish,
    on_progress: Callable[[runner.Progress], None] = lambda _progress: None,
) -> Driver:
    """A driver that waits in this process (`drive`) with these stages."""

    def driver(
        ledger: Ledger, provider: BatchProvider, handle: runner.RunHandle, output: Path, overwrite: bool
    ) -> dict[str, Any]:
        return drive(
            ledger, provider, handle, output, overwrite, policy,
            advance=advance, finish=finish, on_progress=on_progress,
        )  # fmt: skip

    return driver


def default_output(input_path: Path, data_root: Path) -> Path:
    return data_root / "outbox" / f"{input_path.stem}.parquet"


def check_command(
    source: TableSource, job: JobSpec, output: Path | None, overwrite: bool, data_root: Path
) -> tuple[start.Checked, Path, BatchProvider]:
    """Every check a run command passes before the ledger, Prefect or the service is touched:
    the input, the job, the output, the model's batch support, the API key's presence."""
    output_path = output or (local_for(job.output) if job.output else default_output(source.path, data_root))
    checked = start.check(source, job, output_path, overwrite)
    provider = make_provider(checked.job.provider, checked.job.base_url)  # no API key: stops here
    return checked, output_path, provider


def run_job(
    source: TableSource,
    job: JobSpec,
    output: Path | None,
    overwrite: bool,
    data_root: Path,
    driver: Driver,
    *,
    prepare: Prepare = start.prepare,
    origin: str = "cli",
    requested_by: str | None = None,
    lease_wait_s: float = 0.0,
    on_failed: OnFailed = lambda _ledger, _run, _error: None,
    log: Log = LOGGER,
) -> dict[str, Any]:
    """Run a table through the job: every check before the ledger and the service (a refused
    command changes nothing), the request files, the run taken over under its lease, then
    `driver` carries it on. A file in the inbox's processing folder is the inbox's run."""
    checked, output_path, provider = check_command(source, job, output, overwrite, data_root)
    ledger = Ledger(default_ledger_url(data_root))
    took_over = False
    try:
        handle = prepare(ledger, checked, data_root / "runs")
        claimed = inbox.InboxLayout.under(data_root).is_claimed(handle.input)  # a path or a URL
        attempt = start.attempt_of(handle, output_path, overwrite, "inbox" if claimed else origin)
        if requested_by:
            attempt = replace(attempt, requested_by=requested_by)
        with start.taken(ledger, handle, attempt, wait_s=lease_wait_s):
            took_over = True
            log.info(
                "run %s: %s rows, %s shard(s), mode %s%s",
                handle.run_key,
                handle.plan.total_rows,
                len(handle.plan.shards),
                handle.plan.mode,
                f" (auto: sync up to {job.auto_sync_max_rows} rows)" if job.mode == "auto" else "",
            )
            return driver(ledger, provider, handle, output_path, overwrite)
    except Exception as exc:
        run = ledger.run(checked.run_key) if took_over else None
        if run is not None:  # refused before it took the run over: nothing changed, nothing to tell
            on_failed(ledger, run, exc)
        raise
    finally:
        ledger.close()


def resume_job(
    data_root: Path, run_key: str, output: Path | None, overwrite: bool, driver: Driver
) -> dict[str, Any]:
    """Continue a run recorded in the ledger (after a crash, --no-wait, or a wait limit)."""
    ledger = Ledger(default_ledger_url(data_root))
    try:
        run = find_run(ledger, run_key)
        handle = runner.handle_for(ledger, run["run_key"])
        output_path = output or local_for(run["output_path"])
        runner.check_output_path(output_path, overwrite)
        provider = make_provider(handle.job.provider, handle.job.base_url)
        with ledger.lease(handle.run_key):
            return driver(ledger, provider, handle, output_path, overwrite)
    finally:
        ledger.close()
