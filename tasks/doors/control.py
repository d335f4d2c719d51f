"""What `status`, `cancel` and `resume` do, as plain functions the CLI (and anyone) calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks import runner
from tasks.infra.errors import GrokBatchError
from tasks.infra.ledger import BatchRow, Ledger, RunBusyError
from tasks.lifecycle import Step
from tasks.providers.registry import make_provider


def find_run(ledger: Ledger, prefix: str) -> dict[str, Any]:
    """The one run whose key starts with `prefix`, or an error listing what matched."""
    matches = ledger.find_runs(prefix)
    if len(matches) != 1:
        found = ", ".join(m["run_key"] for m in matches) or "none"
        raise GrokBatchError(f"run {prefix!r} matches {len(matches)} runs in {ledger.display_url} ({found})")
    return matches[0]


@dataclass(frozen=True)
class RunStatus:
    runs: list[dict[str, Any]]
    batches: list[BatchRow]  # of the one run asked for by key, else empty


def run_status(ledger: Ledger, prefix: str | None) -> RunStatus:
    """The runs whose key starts with `prefix` (all without one), and the batches of the
    run when exactly one matches a prefix. Reads only the ledger."""
    runs = ledger.find_runs(prefix or "")
    batches = ledger.batches(runs[0]["run_key"]) if prefix and len(runs) == 1 else []
    return RunStatus(runs, batches)


def cancel_run(ledger: Ledger, prefix: str) -> tuple[str, int]:
    """Cancel a run: from now on nothing more is created and no follow-up round is planned;
    its batches at the service are cancelled. Finished results are kept for the join.
    Returns (run_key, batches cancelled at the service).

    The request is a flag in the ledger, so it works while another driver holds the lease
    (that driver closes the unsent shards on its next pass); when the lease is free, the
    unsent shards are closed here at once."""
    key = find_run(ledger, prefix)["run_key"]
    ledger.update_run(key, cancel_requested=True)
    handle = runner.handle_for(ledger, key)
    provider = make_provider(handle.job.provider, handle.job.base_url)
    cancelled = 0
    for row in ledger.batches(key):
        if row.batch_id and row.step == Step.CREATED:
            provider.cancel(row.batch_id)
            cancelled += 1
    try:
        with ledger.lease(key):
            if handle.plan.mode == "batch":
                runner.close_unsent(ledger, provider, handle)
    except RunBusyError:
        pass  # the holder sees the flag on its next pass
    return key, cancelled
