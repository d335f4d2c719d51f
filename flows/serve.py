"""Serve all three deployments from one process: a single machine, no worker needed."""

from __future__ import annotations

from typing import Any

from prefect import serve

from flows.collect import collect_pending
from flows.run_job import run_batch_job
from flows.scan_inbox import scan_inbox


def serve_all(
    data_dir: str = "data",
    inbox_dir: str | None = None,
    scan_interval_s: float = 60.0,
    collect_interval_s: float = 120.0,
    settle_s: float = 10.0,
) -> None:
    """Serve run-job (on demand), scan-inbox and collect-pending (on intervals) until stopped."""
    where = {"data_dir": data_dir, "inbox_dir": inbox_dir}
    # to_deployment is typed sync-or-async; called from sync code it returns the deployment.
    deployments: list[Any] = [
        run_batch_job.to_deployment(name="run-job", parameters={"wait": False, "data_dir": data_dir}),
        scan_inbox.to_deployment(
            name="scan-inbox",
            interval=scan_interval_s,
            concurrency_limit=1,
            parameters={**where, "settle_s": settle_s},
        ),
        collect_pending.to_deployment(
            name="collect-pending", interval=collect_interval_s, concurrency_limit=1, parameters=where
        ),
    ]
    serve(*deployments)
