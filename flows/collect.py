"""The `collect-pending` flow: advance every open run in the ledger by one short step.

Deployed runs submit and return (no worker sleeps for hours while xAI works); this flow,
on an interval schedule, polls, collects, plans retry rounds and joins finished runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact

from flows.run_job import advance_with_tasks, finish_and_publish
from tasks import runner
from tasks.doors import inbox
from tasks.infra.errors import GrokBatchError, ProviderError
from tasks.infra.ledger import Ledger, RunBusyError, default_ledger_url, this_holder
from tasks.providers.registry import make_provider


@flow(name="collect-pending", log_prints=True)
def collect_pending(data_dir: str = "data", inbox_dir: str | None = None) -> dict[str, Any]:
    """Advance every open run once; finish those whose batches are all done."""
    logger = get_run_logger()
    data_root = Path(data_dir)
    layout = inbox.InboxLayout.under(data_root, Path(inbox_dir) if inbox_dir else None)
    ledger = Ledger(default_ledger_url(data_root))
    outcome: dict[str, Any] = {"advanced": [], "finished": [], "failed": [], "busy": [], "unreachable": []}
    holder = this_holder()
    try:
        for run in ledger.open_runs():
            key = run["run_key"]
            try:
                ledger.claim(key, holder, runner.LEASE_S)
            except RunBusyError:
                outcome["busy"].append(key)  # another driver (a CLI --wait, a worker) has it
                continue
            try:
                handle = runner.handle_for(ledger, key)
                progress = advance_with_tasks(
                    ledger, make_provider(handle.job.provider, handle.job.base_url), handle
                )
                create_progress_artifact(
                    progress=100.0 * progress.fraction,
                    key=f"grok-batch-progress-{key}",
                    description=f"{run['job_name']} on {Path(run['input_path']).name}: round "
                    f"{progress.round_no}, {progress.finished}/{progress.requests} requests finished",
                )
                outcome["advanced"].append(key)
                if progress.complete:
                    finish_and_publish(ledger, handle, Path(run["output_path"]), bool(run["overwrite"]))
                    if run["origin"] == "inbox":
                        inbox.archive(Path(run["input_path"]), layout)
                    outcome["finished"].append(key)
            except ProviderError as exc:  # the service or the network: try again next pass
                logger.error("run %s stays open, the service call failed: %s", key, exc)
                outcome["unreachable"].append(key)
            except GrokBatchError as exc:
                logger.error("run %s cannot continue: %s", key, exc)
                ledger.update_run(key, state="failed")
                if run["origin"] == "inbox":
                    inbox.fail(Path(run["input_path"]), exc, layout)
                outcome["failed"].append(key)
            finally:
                ledger.release(key, holder)
    finally:
        ledger.close()
    if outcome["unreachable"]:  # fail this flow run (alerts fire) but keep the runs open
        raise ProviderError(
            f"{len(outcome['unreachable'])} run(s) could not reach the batch service; they stay open "
            "and the next pass tries again"
        )
    return outcome
