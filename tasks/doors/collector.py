"""The collector's pass: advance every open run once, finish those that are complete.

Which errors keep a run open (the service or the network: the next pass tries again) and
which fail it (anything a person must fix) is decided here, for every door that collects.

A pass stays short however many runs are open: a few runs are advanced at once (each under
its own lease), the pass waits for one run at most its budget, and starts runs only within
its own budget; what it did not reach, the next pass takes.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tasks import runner
from tasks.doors import inbox
from tasks.doors.admission import settle_dropped_file
from tasks.doors.drive import Advance, Finish
from tasks.infra.errors import GrokBatchError, InputError, PassFailedError, ProviderError
from tasks.infra.ledger import Ledger, RunBusyError
from tasks.infra.logs import LOGGER, Log
from tasks.infra.settings import number_setting
from tasks.infra.work_copies import local_for
from tasks.lifecycle import RunState
from tasks.providers.base import BatchProvider
from tasks.providers.registry import make_provider

OnProgress = Callable[[dict[str, Any], runner.Progress], None]
Watch = Callable[[Ledger, BatchProvider, runner.RunHandle], tuple[runner.Progress, bool]]


@dataclass(frozen=True)
class Homes:
    """How the pass treats a run whose home is a flow run waiting suspended (a deployed
    run-job): it only polls for it and wakes the home when there is work; the home
    collects, joins and shows it all on its own page."""

    state: Callable[[str], str]  # flow_run_id -> WAITING | BUSY | GONE
    wake: Callable[[str], None]
    watch: Watch = runner.watch
    # A home shown running whose driver died (its lease was taken from a dead holder): say so
    # on the flow run (flow_run_id, why), so its page does not claim it still runs.
    abandon: Callable[[str, str], None] = lambda _flow_run_id, _why: None


WAITING, BUSY, GONE = "waiting", "busy", "gone"
NO_HOMES = Homes(state=lambda _flow_run_id: GONE, wake=lambda _flow_run_id: None)

# What a pass says happened to each run. `overran`: still being advanced when its budget ran
# out (it goes on in the background under its lease; the next pass finds it busy or done);
# `not_reached`: the pass's own budget ran out before it started (the next pass takes it).
OUTCOMES = ("advanced", "woken", "finished", "failed", "busy", "unreachable", "overran", "not_reached")

CONCURRENCY_ENV = "GROK_BATCH_COLLECT_CONCURRENCY"
RUN_BUDGET_ENV = "GROK_BATCH_COLLECT_RUN_BUDGET_S"
PASS_BUDGET_ENV = "GROK_BATCH_COLLECT_PASS_BUDGET_S"


@dataclass(frozen=True)
class PassLimits:
    """How much one pass takes on: runs advanced at once, how long it waits for one run, and
    for how long it starts runs (so a pass ends within pass_budget_s + run_budget_s)."""

    concurrency: int = 8
    run_budget_s: float = 120.0  # above a sync pass's slice (runner.SYNC_SLICE_S) and a create-slot wait
    pass_budget_s: float = 300.0  # the collector's longest interval between passes (flows.wakeups)

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.run_budget_s <= 0 or self.pass_budget_s < 0:
            raise InputError(f"collector limits must be positive: {self}")

    @classmethod
    def from_env(cls) -> PassLimits:
        """The defaults, or GROK_BATCH_COLLECT_CONCURRENCY / _RUN_BUDGET_S / _PASS_BUDGET_S."""
        default = cls()
        return cls(
            concurrency=int(number_setting(CONCURRENCY_ENV, default.concurrency, positive=True)),
            run_budget_s=number_setting(RUN_BUDGET_ENV, default.run_budget_s, positive=True),
            pass_budget_s=number_setting(PASS_BUDGET_ENV, default.pass_budget_s, positive=True),
        )


def collect_pass(
    ledger: Ledger,
    layout: inbox.InboxLayout,
    *,
    advance: Advance = runner.advance,
    finish: Finish = runner.finish,
    on_progress: OnProgress = lambda _run, _progress: None,
    on_failed: Callable[[dict[str, Any], Exception], None] = lambda _run, _error: None,
    homes: Homes = NO_HOMES,
    log: Log = LOGGER,
    limits: PassLimits | None = None,
) -> dict[str, list[str]]:
    """Advance every open run whose lease is free by one pass, a few at once (`limits`,
    default from the environment); returns the run keys by what happened to them (OUTCOMES),
    each list in the ledger's order of the runs."""
    limits = limits or PassLimits.from_env()
    pass_ = _Pass(ledger, layout, advance, finish, on_progress, on_failed, homes, log)
    runs = ledger.open_runs()
    happened = _advance_bounded(pass_.one, runs, limits, log)
    outcome: dict[str, list[str]] = {kind: [] for kind in OUTCOMES}
    for run in runs:
        for kind in happened.get(run["run_key"], []):
            outcome[kind].append(run["run_key"])
    if outcome["overran"]:
        log.warning(
            "%s run(s) still being advanced after %.0f s: %s; they go on in the background and "
            "the next pass looks again",
            len(outcome["overran"]),
            limits.run_budget_s,
            ", ".join(outcome["overran"]),
        )
    if outcome["not_reached"]:
        log.info(
            "%s open run(s) not reached within this pass's %.0f s; the next pass takes them",
            len(outcome["not_reached"]),
            limits.pass_budget_s,
        )
    return outcome


def _advance_bounded(
    work: Callable[[dict[str, Any]], list[str]],
    runs: list[dict[str, Any]],
    limits: PassLimits,
    log: Log,
) -> dict[str, list[str]]:
    """`work` on every run, `limits.concurrency` at once: run key -> what happened to it.
    Stops waiting for a run after its budget and starts none after the pass's budget. A run
    it stopped waiting for goes on in its thread till its stage returns (a thread cannot be
    stopped safely between an intent and its paid call; its lease keeps others off), and
    this process exits only after it."""
    pass_deadline = time.monotonic() + limits.pass_budget_s
    results: queue.SimpleQueue[tuple[str, list[str] | BaseException]] = queue.SimpleQueue()
    lock = threading.Lock()
    running: dict[str, float] = {}  # run key -> when its work began (monotonic)
    left_behind: set[str] = set()  # runs the pass stopped waiting for

    def timed(run: dict[str, Any]) -> None:
        key, began = run["run_key"], time.monotonic()
        if began >= pass_deadline:
            results.put((key, ["not_reached"]))
            return
        with lock:
            running[key] = began
        result: list[str] | BaseException
        try:
            result = work(run)
        except BaseException as exc:  # the pass's thread raises it
            result = exc
        with lock:
            del running[key]
            late = key in left_behind
        if late:
            log.info("run %s: its overrunning advance has ended: %s", key, result or "nothing to do")
        results.put((key, result))

    happened: dict[str, list[str]] = {}
    waiting = {run["run_key"] for run in runs}
    pool = ThreadPoolExecutor(max_workers=limits.concurrency, thread_name_prefix="grok-batch-collect")
    try:
        # Each run in a copy of this context, so Prefect tasks and loggers see the flow run.
        queued = {run["run_key"]: pool.submit(contextvars.copy_context().run, timed, run) for run in runs}
        while waiting:  # each round ends at a result or a deadline: bounded
            now = time.monotonic()
            if queued and now >= pass_deadline:  # runs not started yet stay for the next pass
                for key in [k for k, future in queued.items() if future.cancel()]:
                    happened[key] = ["not_reached"]
                    waiting.discard(key)
                queued = {}
            with lock:
                ends = {k: began + limits.run_budget_s for k, began in running.items() if k in waiting}
                for key in [k for k, end in ends.items() if now >= end]:
                    happened[key] = ["overran"]
                    waiting.discard(key)
                    left_behind.add(key)
                    del ends[key]
            if not waiting:
                break
            wake_at = min([*ends.values(), pass_deadline if queued else now + 1.0])
            try:
                key, result = results.get(timeout=min(max(wake_at - now, 0.0) + 0.01, 1.0))
            except queue.Empty:
                continue
            if key not in waiting:
                continue  # an overrunning run ended: already reported
            if isinstance(result, BaseException):
                raise result  # a bug in a stage stops the pass, as it always did
            happened[key] = result
            waiting.discard(key)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return happened


@dataclass
class _Pass:
    ledger: Ledger
    layout: inbox.InboxLayout
    advance: Advance
    finish: Finish
    on_progress: OnProgress
    on_failed: Callable[[dict[str, Any], Exception], None]
    homes: Homes
    log: Log
    # One client per provider and server for the whole pass (threads share it: the SDK's
    # HTTP client is thread-safe), not one per run.
    _providers: dict[tuple[str, str | None], BatchProvider] = field(default_factory=dict)
    _providers_lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self, listed: dict[str, Any]) -> list[str]:
        """Advance one run under its lease; what happened to it (OUTCOMES)."""
        key = listed["run_key"]
        happened: list[str] = []
        try:
            with self.ledger.lease(key):
                home_to_wake = self.advance_one(listed, happened)
        except RunBusyError:
            return ["busy"]  # another driver (a CLI --wait, a worker, a thread here) has it
        if home_to_wake:  # after the lease is released: the woken run takes it at once
            self.homes.wake(home_to_wake)
            self.log.info("run %s: woke its flow run %s to collect and join", key, home_to_wake)
        return happened

    def provider_for(self, name: str, base_url: str | None) -> BatchProvider:
        with self._providers_lock:
            if (name, base_url) not in self._providers:
                self._providers[(name, base_url)] = make_provider(name, base_url)
            return self._providers[(name, base_url)]

    def advance_one(self, listed: dict[str, Any], happened: list[str]) -> str | None:
        """Advance one run (its lease held), noting what happened in `happened`; returns the
        flow run to wake, if any."""
        key, ledger = listed["run_key"], self.ledger
        run = ledger.run(key)  # as it is now that we hold the lease: another pass may have finished it
        if run is None or run["state"] != RunState.OPEN:
            return None
        try:
            handle = runner.handle_for(ledger, key)
            provider = self.provider_for(handle.job.provider, handle.job.base_url)
            home = run.get("flow_run_id")
            where = self.homes.state(home) if home else GONE
            dead = ledger.abandoned_by(key)
            if where == BUSY and home and dead:  # shown running, but its process died holding the lease
                self.log.warning("run %s: its flow run %s died with its worker (%s)", key, home, dead)
                self.homes.abandon(str(home), f"its worker {dead} died holding the run")
                where = GONE
            if where == BUSY:  # resuming or running: it is its own driver now
                happened.append("busy")
                return None
            if where == WAITING:
                progress, work = self.homes.watch(ledger, provider, handle)
                self.on_progress(run, progress)
                self.log.info(
                    "run %s (%s, flow run %s): round %s, %s/%s requests finished",
                    key,
                    run["job_name"],
                    home,
                    progress.round_no,
                    progress.finished,
                    progress.requests,
                )
                happened.append("advanced")
                if work:
                    happened.append("woken")
                    return str(home)
                return None
            if home:  # its flow run is gone (crashed, cancelled, deleted): this pass drives it
                self.log.warning("run %s: its flow run %s is gone; the collector finishes it", key, home)
                ledger.update_run(key, flow_run_id=None, progress_artifact_id=None)
            progress = self.advance(ledger, provider, handle)
            self.on_progress(run, progress)
            self.log.info(
                "run %s (%s): round %s, %s/%s requests finished",
                key,
                run["job_name"],
                progress.round_no,
                progress.finished,
                progress.requests,
            )
            happened.append("advanced")
            if progress.complete:
                # Recorded as its store URL when it goes to one: finished through its working copy.
                self.finish(ledger, handle, local_for(run["output_path"]), bool(run["overwrite"]))
                settle_dropped_file(ledger, run, self.layout)
                self.log.info("run %s finished: %s", key, run["output_path"])
                happened.append("finished")
        except RunBusyError:  # a renew found another driver took the run over: its run now, not failed
            happened.append("busy")
        except ProviderError as exc:  # the service or the network: try again next pass
            self.log.error("run %s stays open, the service call failed: %s", key, exc)
            happened.append("unreachable")
        except GrokBatchError as exc:
            self.log.error("run %s cannot continue: %s", key, exc)
            ledger.update_run(key, state=RunState.FAILED)
            settle_dropped_file(ledger, run, self.layout, exc)
            self.on_failed(run, exc)
            happened.append("failed")
        return None


def raise_if_unreachable(outcome: dict[str, list[str]]) -> None:
    """Fail the pass (so alerts fire) when the service could not be reached (the runs stay
    open) or a run failed (it needs a person)."""
    if outcome["unreachable"]:
        raise ProviderError(
            f"{len(outcome['unreachable'])} run(s) could not reach the batch service; they stay open "
            "and the next pass tries again"
        )
    if outcome["failed"]:
        raise PassFailedError(f"run(s) failed: {', '.join(outcome['failed'])}; see the log for why", outcome)
