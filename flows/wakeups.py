"""How deployed runs wait without holding a worker, in Prefect's terms.

A deployed run-job that has nothing to do until the service finishes suspends itself
(its process exits, no worker slot is held). A collect-pending pass polls for it, updates
the progress bar on its page, and resumes it when there is work (collect, retry, join);
the resumed run re-runs from the top, which the idempotent stages make safe, and joins on
its own page. Collector passes are scheduled only while something waits: each suspended
run and each pass that leaves runs waiting books the next pass, with backoff, under an
idempotency key per time slot, so many waiting runs share one pass.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled, Crashed

from tasks.doors.collector import BUSY, GONE, WAITING, Homes
from tasks.infra.ledger import lease_seconds
from tasks.infra.logs import LOGGER, Log

COLLECTOR_DEPLOYMENT = "collect-pending/collect-pending"
# The first passes come soon (small batches finish in seconds), later ones at most every
# five minutes: a wait of age A is looked at again after A/4, within these bounds.
MIN_DELAY_ENV = "GROK_BATCH_COLLECT_MIN_DELAY_S"
MAX_DELAY_S = 300.0
STUCK_ENV = "GROK_BATCH_STUCK_HOME_S"  # a resumed home nobody starts within this is taken over


def deployed() -> bool:
    """Whether this flow run belongs to a deployment (so it can be suspended and resumed)."""
    return deployment.id is not None


def current_flow_run_id() -> str:
    return str(flow_run.id)


def next_delay_s(waiting_since: float, now: float | None = None) -> float:
    low = float(os.environ.get(MIN_DELAY_ENV, "10"))
    age = (time.time() if now is None else now) - waiting_since
    return min(max(age / 4, low), MAX_DELAY_S)


def book_collector(delay_s: float, log: Log = LOGGER) -> None:
    """Schedule one collect-pending pass in `delay_s` (shared with any other booking for
    the same time slot). Without a collect-pending deployment nothing is booked: the
    collector's own schedule, if any, comes instead."""
    from prefect.deployments import run_deployment

    when = time.time() + delay_s
    slot = int(when // max(delay_s, 1.0))
    try:
        booked: Any = run_deployment(  # sync from sync code (typed sync-or-async)
            COLLECTOR_DEPLOYMENT,
            scheduled_time=datetime.fromtimestamp(when, tz=UTC),
            timeout=0,
            as_subflow=False,
            idempotency_key=f"grok-batch-collect-{int(max(delay_s, 1.0))}-{slot}",
        )
    except ObjectNotFound:
        log.warning(
            "no %s deployment: nothing will resume waiting runs but a collector you start",
            COLLECTOR_DEPLOYMENT,
        )
        return
    log.info("collect-pending pass booked for %s (flow run %s)", _clock(when), booked.id)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%H:%M:%S UTC")


def home_state(flow_run_id: str) -> str:
    """WAITING (suspended: the collector polls for it), BUSY (resuming or running: it
    drives itself) or GONE (crashed, cancelled, deleted: the collector takes over)."""
    with get_client(sync_client=True) as client:
        try:
            found = client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return GONE
    state = found.state
    if state is None:
        return GONE
    if state.type == StateType.PAUSED:
        return WAITING
    waited_s = time.time() - state.timestamp.timestamp() if state.timestamp else 0.0
    if state.type == StateType.SCHEDULED and waited_s > float(os.environ.get(STUCK_ENV, "120")):
        # Resumed, but nothing picks it up (the `serve` that ran its deployment is gone, or
        # no worker has room): cancel it, so it never runs later, and let the collector
        # finish the job.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                UUID(flow_run_id),
                Cancelled(message="nothing picked this run up; collect-pending finished the job"),
                force=True,
            )
        return GONE
    if state.type in (StateType.PENDING, StateType.RUNNING) and waited_s > 2 * lease_seconds():
        # Asked only by a pass that holds the run's lease: a live home takes the lease within
        # seconds of starting and keeps it while it works, so one shown running this long
        # without it died with its worker (SIGKILL, a lost machine: Prefect never hears of it).
        abandon(flow_run_id, f"shown running {waited_s:.0f} s without holding its run: its worker is gone")
        return GONE
    if state.type in (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING):
        return BUSY
    return GONE


def wake(flow_run_id: str) -> None:
    resume_flow_run(UUID(flow_run_id))


def abandon(flow_run_id: str, reason: str) -> None:
    """A home whose worker died while it ran (SIGKILL, a lost machine) stays Running in Prefect
    forever: mark it Crashed, saying who finishes its job."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(flow_run_id),
            Crashed(message=f"{reason}; collect-pending finished the job"),
            force=True,
        )


PREFECT_HOMES = Homes(state=home_state, wake=wake, abandon=abandon)


def rename_current_run(name: str) -> None:
    """Name a background flow run for what it did (set at its end, when that is known)."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name)
