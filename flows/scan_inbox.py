"""The `scan-inbox` flow: turn settled files in the inbox into submitted runs.

It submits and returns; `collect-pending` finishes the runs and moves inputs to archive/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.stages import prepare_task, submit_task
from tasks.doors import inbox
from tasks.infra.errors import ProviderError
from tasks.infra.ledger import Ledger, default_ledger_url, this_holder
from tasks.infra.run_layout import run_key
from tasks.infra.table_io import TableSource
from tasks.providers.registry import make_provider


@flow(name="scan-inbox", log_prints=True)
def scan_inbox(
    data_dir: str = "data", inbox_dir: str | None = None, settle_s: float = 10.0
) -> dict[str, Any]:
    """Claim every dropped table that has stopped growing and submit its batches."""
    logger = get_run_logger()
    data_root = Path(data_dir)
    layout = inbox.InboxLayout.under(data_root, Path(inbox_dir) if inbox_dir else None)
    layout.ensure()
    ledger = Ledger(default_ledger_url(data_root))
    outcome: dict[str, list[str]] = {"submitted": [], "duplicates": [], "failed": []}
    try:
        for table in inbox.settled_tables(layout.inbox, settle_s):
            claimed: inbox.Claimed | None = None
            try:
                claimed = inbox.claim(table, layout)
                if claimed is None:
                    continue  # another scan took it
                key = run_key(claimed.sha256, claimed.job.fingerprint(), "utf-8")
                known = ledger.run(key)
                if known is not None and known["state"] != "failed":
                    logger.warning(
                        "%s has the same content and job as run %s; not sent again", table.name, key
                    )
                    inbox.archive(claimed.path, layout)
                    outcome["duplicates"].append(table.name)
                    continue
                taken = {Path(r["output_path"]) for r in ledger.open_runs() if r["output_path"]}
                output = inbox.output_for(claimed.name, claimed.sha256, layout, taken)
                handle = prepare_task(
                    TableSource(claimed.path),
                    claimed.job,
                    data_root / "runs",
                    ledger,
                    output,
                    overwrite=False,
                    origin="inbox",
                    input_sha=claimed.sha256,
                )
                try:
                    if handle.plan.mode == "batch":  # sync runs are answered by collect-pending
                        submit_task(ledger, make_provider(claimed.job.provider, claimed.job.base_url), handle)
                except ProviderError as exc:  # the run is recorded: collect-pending submits it later
                    logger.error("%s is queued; submitting failed for now: %s", table.name, exc)
                finally:
                    ledger.release(handle.run_key, this_holder())
                outcome["submitted"].append(table.name)
            except Exception as exc:  # one bad drop never stops the scan of the others
                logger.error("%s cannot be processed: %s", table.name, exc)
                inbox.fail(claimed.path if claimed else table, exc, layout)
                outcome["failed"].append(table.name)
    finally:
        ledger.close()
    return outcome
