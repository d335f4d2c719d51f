"""The `scan-inbox` flow: turn settled files in the inbox into submitted runs.

Each file it takes becomes a run of its own `run-job` flow run (its home, as for a job
started in the UI), which submits, waits suspended and ends with the output and the
input moved to archive/. Without a run-job deployment the scan submits itself and
`collect-pending` finishes the run.
The admission rules are `tasks.doors.admission.admit_settled`. A pass in which a dropped
file could not be processed ends Failed (the file is in failed/ with a note), so alerts fire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.logs import TeeLog
from flows.stages import prepare_task, submit_task
from flows.wakeups import book_collector, deployed, rename_current_run
from tasks.doors import inbox
from tasks.doors.admission import StartHome, admit_settled, no_home, raise_if_failed
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.run_layout import data_root as data_root_of
from tasks.infra.work_copies import url_for
from tasks.start import Checked

RUN_JOB_DEPLOYMENT = "run-batch-job/run-job"


def _start_home_in(data_root: Path) -> StartHome:
    """A dropped file's home: a run of the run-job deployment, like a job started in the UI."""

    def start(checked: Checked, output: Path) -> str | None:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        try:
            started: Any = run_deployment(  # sync from sync code (typed sync-or-async)
                RUN_JOB_DEPLOYMENT,
                parameters={  # as any worker on any machine names them: URLs for what is on a store
                    "input_path": url_for(checked.source.path),
                    "job": checked.job.model_dump(mode="json", exclude={"output"}),
                    "output": url_for(output),
                    "data_dir": url_for(data_root),
                },
                timeout=0,
                as_subflow=False,
            )
        except ObjectNotFound:
            return None  # no run-job deployment here: the scan submits and the collector finishes
        return str(started.id)

    return start


@flow(name="scan-inbox", log_prints=True)
def scan_inbox(
    data_dir: str | None = None, inbox_dir: str | None = None, settle_s: float = 10.0
) -> dict[str, Any]:
    """Claim every dropped table that has stopped growing and submit its batches.

    Args:
        data_dir: Where runs, the ledger and the inbox folders live, a folder or a store URL such as
            s3://bucket/grok (default $GROK_BATCH_DATA_DIR, else data).
        inbox_dir: The inbox folder or URL, when it is not DATA_DIR/inbox.
        settle_s: A dropped file is taken once it has not changed for this many seconds.
    """
    logger = get_run_logger()
    data_root = data_root_of(data_dir)
    layout = inbox.InboxLayout.under(data_root, inbox_dir)
    ledger = Ledger(default_ledger_url(data_root))
    try:
        outcome = admit_settled(
            ledger,
            layout,
            data_root / "runs",
            settle_s,
            prepare=prepare_task,
            submit=submit_task,
            start_home=_start_home_in(data_root) if deployed() else no_home,
            log=TeeLog(),
        )
    finally:
        ledger.close()
    if deployed():
        counts = [f"{len(outcome[k])} {k}" for k in ("submitted", "duplicates", "failed") if outcome[k]]
        rename_current_run(" · ".join(["scan", *counts]) if counts else "scan · idle")
        if outcome["submitted"]:
            book_collector(10.0, logger)
    raise_if_failed(outcome)
    return dict(outcome)
