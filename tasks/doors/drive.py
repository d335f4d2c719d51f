"""Driving one run to its end in this process: advance, wait with backoff, join.

Used by the CLI and the run-job / resume flows when they wait; the flows pass their
Prefect task versions of `advance` and `finish`, and a listener that publishes progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import runner
from tasks.infra.ledger import Ledger
from tasks.providers.base import BatchProvider
from tasks.stages.report import RunSummary

Advance = Callable[[Ledger, BatchProvider, runner.RunHandle], runner.Progress]
Finish = Callable[[Ledger, runner.RunHandle, Path, bool], RunSummary]


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
