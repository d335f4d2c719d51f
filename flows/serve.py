"""Serve all three deployments from one process: a single machine, no worker needed."""

from __future__ import annotations

from typing import Any

from prefect import serve

from flows.collect import collect_pending
from flows.logs import print_product_log
from flows.run_job import run_batch_job
from flows.scan_inbox import scan_inbox


def serve_all(
    data_dir: str = "data",
    inbox_dir: str | None = None,
    scan_interval_s: float = 60.0,
    collect_interval_s: float = 600.0,
    settle_s: float = 10.0,
) -> None:
    """Serve run-job (on demand), scan-inbox and collect-pending until stopped.

    No deployment has a concurrency limit: the ledger's lease keeps one driver per run, and a
    limit's slots can be left occupied by a killed process. collect-pending's interval is a
    backstop: waiting runs book the passes they need (flows.wakeups)."""
    print_product_log()
    where = {"data_dir": data_dir, "inbox_dir": inbox_dir}
    # to_deployment is typed sync-or-async; called from sync code it returns the deployment.
    deployments: list[Any] = [
        run_batch_job.to_deployment(name="run-job", parameters={"data_dir": data_dir}),
        scan_inbox.to_deployment(
            name="scan-inbox", interval=scan_interval_s, parameters={**where, "settle_s": settle_s}
        ),
        collect_pending.to_deployment(name="collect-pending", interval=collect_interval_s, parameters=where),
    ]
    serve(*deployments)
