"""submit: upload each planned shard and create its batch, exactly once per shard.

The ledger hears the intent before each paid call and the outcome right after, so a
rerun after a crash knows what may have happened: a shard left in step "creating"
is looked up by its deterministic batch name before anything is created again.
"""

from __future__ import annotations

from pathlib import Path

from tasks.infra.crashpoints import AFTER_CREATE, AFTER_UPLOAD, crashpoint
from tasks.infra.ledger import Ledger
from tasks.lifecycle import BatchState, Step
from tasks.providers.base import BatchProvider


def submit_planned(ledger: Ledger, provider: BatchProvider, run_key: str) -> int:
    """Submit every shard of the run that has no batch yet; returns how many were submitted.

    The run's lease is renewed before each shard: if a long pass outlived it and another
    driver took the run over, RunBusyError stops this one before it pays for anything.
    """
    submitted = 0
    for row in ledger.batches(run_key):
        if row.batch_id is not None or row.step == Step.CREATED:
            continue
        ledger.renew(run_key)
        file_id = row.file_id
        if file_id is None:
            ledger.update_batch(row.batch_name, step=Step.UPLOADING)
            file_id = provider.upload(Path(row.shard_path))
            ledger.update_batch(row.batch_name, step=Step.UPLOADED, file_id=file_id)
            crashpoint(AFTER_UPLOAD)
        batch_id = provider.find_batch(row.batch_name) if row.step == Step.CREATING else None
        if batch_id is None:
            ledger.update_batch(row.batch_name, step=Step.CREATING)
            batch_id = provider.create_batch(row.batch_name, file_id)
            crashpoint(AFTER_CREATE)
        ledger.update_batch(row.batch_name, step=Step.CREATED, batch_id=batch_id, state=BatchState.VALIDATING)
        submitted += 1
    return submitted
