"""submit: upload each planned shard and create its batch, exactly once per shard.

The ledger hears the intent before each paid call and the outcome right after, so a
rerun after a crash knows what may have happened: a shard left in step "creating"
is looked up by its deterministic batch name before anything is created again.

Batch creations keep to one rate for the whole fleet (every worker writing the ledger),
taken slot by slot from the ledger; a shard that finds no slot within a minute waits for
the next pass, uploaded or planned as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.infra.crashpoints import AFTER_CREATE, AFTER_UPLOAD, crashpoint
from tasks.infra.ledger import Ledger
from tasks.infra.logs import LOGGER
from tasks.infra.ratelimit import FleetLimiter, FleetRate
from tasks.infra.run_layout import RunPaths
from tasks.infra.settings import number_setting
from tasks.infra.work_copies import local_for
from tasks.lifecycle import BatchState, Step
from tasks.providers.base import BatchProvider

CREATES_PER_MINUTE_ENV = "GROK_BATCH_BATCH_CREATES_PER_MINUTE"
# The batch-creation limits per team (shared/reference/xai-batch-api.md, Limits): xAI 2/s
# (1/s in older docs), OpenAI 2,000/hour. Defaults stay under them: xAI 100/min; OpenAI
# 33/min after a burst of 20 (20 + 33 x 60 = 2,000 in any hour). Another provider: 60/min.
DOCUMENTED_CREATE_RATES = {"xai": (100.0, 1), "openai": (33.0, 20)}
OTHER_CREATE_RATE = (60.0, 1)
CREATE_SLOT_WAIT_S = 60.0  # longer, and the run's other work (polls, collects) waits too


def batch_create_rate(provider: BatchProvider) -> FleetRate:
    """The fleet's batch-creation rate at this provider's server: GROK_BATCH_BATCH_CREATES_PER_MINUTE
    (0: no limit of ours) if set, else the provider's documented limit with a margin."""
    per_minute, burst = DOCUMENTED_CREATE_RATES.get(provider.name, OTHER_CREATE_RATE)
    if os.environ.get(CREATES_PER_MINUTE_ENV, "").strip():  # set: exactly that, no burst
        per_minute, burst = number_setting(CREATES_PER_MINUTE_ENV, per_minute), 1
    return FleetRate(f"batch-create {provider.name} {provider.base_url}", per_minute, burst)


def submit_planned(
    ledger: Ledger,
    provider: BatchProvider,
    run_key: str,
    *,
    limiter: FleetLimiter | None = None,
    slot_wait_s: float = CREATE_SLOT_WAIT_S,
) -> int:
    """Submit every shard of the run that has no batch yet; returns how many were submitted.

    The run's lease is renewed before each shard and while waiting for a creation slot: if
    a long pass outlived it and another driver took the run over, RunBusyError stops this
    one before it pays for anything. `limiter` (default: the fleet's rate for this provider
    and server) paces the creations.
    """
    limiter = limiter or FleetLimiter(ledger, batch_create_rate(provider))
    run = ledger.run(run_key) or {}
    paths = RunPaths(local_for(run["run_dir"])) if run else None  # this machine's copy of the run
    submitted = 0
    for row in ledger.batches(run_key):
        if row.batch_id is not None or row.step == Step.CREATED:
            continue
        ledger.renew(run_key)
        file_id = row.file_id
        if file_id is None:
            ledger.update_batch(row.batch_name, step=Step.UPLOADING)
            # Planned perhaps on another machine: its shard as this machine holds it.
            file_id = provider.upload(paths.shard_file(row.shard_path) if paths else Path(row.shard_path))
            ledger.update_batch(row.batch_name, step=Step.UPLOADED, file_id=file_id)
            crashpoint(AFTER_UPLOAD)
        batch_id = provider.find_batch(row.batch_name) if row.step == Step.CREATING else None
        if batch_id is None:
            if limiter.acquire(slot_wait_s, on_wait=lambda: ledger.renew(run_key)) is None:
                LOGGER.info(
                    "run %s: the fleet's batch creations (%s/min at %s) are taken for the next %.0f s; "
                    "its other shards wait for the next pass",
                    run_key,
                    f"{limiter.rate.per_minute:g}",
                    provider.base_url,
                    slot_wait_s,
                )
                break
            ledger.update_batch(row.batch_name, step=Step.CREATING)
            batch_id = provider.create_batch(row.batch_name, file_id)
            crashpoint(AFTER_CREATE)
        ledger.update_batch(row.batch_name, step=Step.CREATED, batch_id=batch_id, state=BatchState.VALIDATING)
        submitted += 1
    return submitted
