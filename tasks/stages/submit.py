"""submit: upload each planned shard and create its batch, exactly once per shard.

The ledger hears the intent before each paid call and the outcome right after, so a
rerun after a crash knows what may have happened: a shard left in step "creating"
is looked up by its deterministic batch name before anything is created again.
"""

from __future__ import annotations

from pathlib import Path

from tasks.infra.crashpoints import AFTER_CREATE, AFTER_UPLOAD, crashpoint
from tasks.infra.ledger import Ledger, this_holder
from tasks.providers.base import BatchProvider, BatchState


def submit_planned(ledger: Ledger, provider: BatchProvider, run_key: str, lease_s: float = 300.0) -> int:
    """Submit every shard of the run that has no batch yet; returns how many were submitted.

    The run's lease is renewed before each shard: if a long pass outlived it and another
    driver took the run over, RunBusyError stops this one before it pays for anything.
    """
    submitted = 0
    holder = this_holder()
    for row in ledger.batches(run_key):
        if row.batch_id is not None or row.step == "created":
            continue
        ledger.claim(run_key, holder, lease_s)
        file_id = row.file_id
        if file_id is None:
            ledger.update_batch(row.batch_name, step="uploading")
            file_id = provider.upload(Path(row.shard_path))
            ledger.update_batch(row.batch_name, step="uploaded", file_id=file_id)
            crashpoint(AFTER_UPLOAD)
        batch_id = provider.find_batch(row.batch_name) if row.step == "creating" else None
        if batch_id is None:
            ledger.update_batch(row.batch_name, step="creating")
            batch_id = provider.create_batch(row.batch_name, file_id)
            crashpoint(AFTER_CREATE)
        ledger.update_batch(row.batch_name, step="created", batch_id=batch_id, state=BatchState.VALIDATING)
        submitted += 1
    return submitted
