"""The `scan-inbox` flow: turn settled files in the inbox into submitted runs.

It submits and returns; `collect-pending` finishes the runs and moves inputs to archive/.
The admission rules are `tasks.doors.admission.admit_settled`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.stages import prepare_task, submit_task
from tasks.doors import inbox
from tasks.doors.admission import admit_settled
from tasks.infra.ledger import Ledger, default_ledger_url


@flow(name="scan-inbox", log_prints=True)
def scan_inbox(
    data_dir: str = "data", inbox_dir: str | None = None, settle_s: float = 10.0
) -> dict[str, Any]:
    """Claim every dropped table that has stopped growing and submit its batches."""
    data_root = Path(data_dir)
    layout = inbox.InboxLayout.under(data_root, Path(inbox_dir) if inbox_dir else None)
    ledger = Ledger(default_ledger_url(data_root))
    try:
        return dict(
            admit_settled(
                ledger,
                layout,
                data_root / "runs",
                settle_s,
                prepare=prepare_task,
                submit=submit_task,
                log=get_run_logger(),
            )
        )
    finally:
        ledger.close()
