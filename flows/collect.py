"""The `collect-pending` flow: advance every open run in the ledger by one short pass.

No worker sleeps for hours while xAI works: a deployed run-job waits suspended, and this
flow polls for it, updates its progress bar and resumes it when there is work; runs with
no flow run of their own (the inbox, `--no-wait`) it advances and finishes itself. Each
pass is named for what it did and books the next one only while runs are waiting
(flows.wakeups). The pass itself is `tasks.doors.collector.collect_pass`.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from flows.artifacts import publish_progress
from flows.events import emit_run_event
from flows.logs import TeeLog
from flows.stages import advance_with_tasks, finish_and_publish
from flows.wakeups import PREFECT_HOMES, book_collector, deployed, next_delay_s, rename_current_run
from tasks.doors import inbox
from tasks.doors.collector import collect_pass, raise_if_unreachable
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.run_layout import data_root as data_root_of


@flow(name="collect-pending", log_prints=True)
def collect_pending(data_dir: str | None = None, inbox_dir: str | None = None) -> dict[str, Any]:
    """Advance every open run once: poll for waiting flow runs and resume those with work;
    finish runs whose every row has its outcome.

    Args:
        data_dir: Where runs and the ledger live (default $GROK_BATCH_DATA_DIR, else data).
        inbox_dir: The inbox folder or URL, when it is not DATA_DIR/inbox.
    """
    logger = get_run_logger()
    data_root = data_root_of(data_dir)
    layout = inbox.InboxLayout.under(data_root, inbox_dir)
    ledger = Ledger(default_ledger_url(data_root))
    try:
        outcome = collect_pass(
            ledger,
            layout,
            advance=advance_with_tasks,
            finish=finish_and_publish,
            on_progress=publish_progress,
            on_failed=lambda run, error: emit_run_event("failed", run, {"error": str(error)[:500]}),
            homes=PREFECT_HOMES,
            log=TeeLog(),
        )
        waiting = ledger.open_runs()
    finally:
        ledger.close()
    if deployed():
        rename_current_run(pass_name(outcome))
        if waiting:  # only while something waits: an idle system books no passes
            # Runs this pass had no time for: the next pass soon, not after the usual backoff.
            since = time.time() if outcome["not_reached"] else min(float(r["created_at"]) for r in waiting)
            book_collector(next_delay_s(since), logger)
    raise_if_unreachable(outcome)  # fails this flow run (alerts fire); open runs stay open
    return dict(outcome)


def pass_name(outcome: dict[str, list[str]]) -> str:
    """`collect · 3 runs advanced · 1 finished`, or `collect · idle`."""
    parts = [
        f"{len(outcome[kind])} run{'s' if len(outcome[kind]) != 1 else ''} {label}"
        if kind == "advanced"
        else f"{len(outcome[kind])} {label}"
        for kind, label in (
            ("advanced", "advanced"),
            ("woken", "woken"),
            ("finished", "finished"),
            ("failed", "failed"),
            ("unreachable", "unreachable"),
            ("busy", "busy elsewhere"),
            ("overran", "overran their budget"),
            ("not_reached", "left for the next pass"),
        )
        if outcome[kind]
    ]
    return " · ".join(["collect", *parts]) if parts else "collect · idle"
