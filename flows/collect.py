"""The `collect-pending` flow: advance every open run in the ledger by one short pass.

Deployed runs submit and return (no worker sleeps for hours while xAI works); this flow,
on an interval schedule, polls, collects, plans retry rounds and joins finished runs.
The pass itself is `tasks.doors.collector.collect_pass`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.artifacts import publish_progress
from flows.stages import advance_with_tasks, finish_and_publish
from tasks.doors import inbox
from tasks.doors.collector import collect_pass, raise_if_unreachable
from tasks.infra.ledger import Ledger, default_ledger_url


@flow(name="collect-pending", log_prints=True)
def collect_pending(data_dir: str = "data", inbox_dir: str | None = None) -> dict[str, Any]:
    """Advance every open run once; finish those whose batches are all done."""
    data_root = Path(data_dir)
    layout = inbox.InboxLayout.under(data_root, Path(inbox_dir) if inbox_dir else None)
    ledger = Ledger(default_ledger_url(data_root))
    try:
        outcome = collect_pass(
            ledger,
            layout,
            advance=advance_with_tasks,
            finish=finish_and_publish,
            on_progress=publish_progress,
            log=get_run_logger(),
        )
    finally:
        ledger.close()
    raise_if_unreachable(outcome)  # fails this flow run (alerts fire); the runs stay open
    return dict(outcome)
