"""poll: refresh the normalized state of every batch still in flight."""

from __future__ import annotations

from tasks.infra.crashpoints import WHILE_POLLING, crashpoint
from tasks.infra.ledger import BatchRow, Ledger
from tasks.lifecycle import Step, is_terminal
from tasks.providers.base import BatchProvider


def poll_open(ledger: Ledger, provider: BatchProvider, run_key: str) -> list[BatchRow]:
    """Ask the service about every created, not yet terminal batch; returns all batches."""
    for row in ledger.batches(run_key):
        if row.step != Step.CREATED or row.batch_id is None or is_terminal(row.state):
            continue
        status = provider.get_status(row.batch_id)
        crashpoint(WHILE_POLLING)
        finished = status.total - status.pending if status.total else 0
        ledger.update_batch(row.batch_name, state=status.state, finished=finished, message=status.message)
    return ledger.batches(run_key)
