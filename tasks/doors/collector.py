"""The collector's pass: advance every open run once, finish those that are complete.

Which errors keep a run open (the service or the network: the next pass tries again) and
which fail it (anything a person must fix) is decided here, for every door that collects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import runner
from tasks.doors import inbox
from tasks.doors.admission import settle_dropped_file
from tasks.doors.drive import Advance, Finish
from tasks.infra.errors import GrokBatchError, PassFailedError, ProviderError
from tasks.infra.ledger import Ledger, RunBusyError
from tasks.infra.logs import LOGGER, Log
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


WAITING, BUSY, GONE = "waiting", "busy", "gone"
NO_HOMES = Homes(state=lambda _flow_run_id: GONE, wake=lambda _flow_run_id: None)


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
) -> dict[str, list[str]]:
    """Advance every open run whose lease is free by one pass; returns the run keys by
    what happened to them: advanced, woken (their home has work), finished, failed, busy,
    unreachable."""
    outcome: dict[str, list[str]] = {
        kind: [] for kind in ("advanced", "woken", "finished", "failed", "busy", "unreachable")
    }
    pass_ = _Pass(ledger, layout, outcome, advance, finish, on_progress, on_failed, homes, log)
    for run in ledger.open_runs():
        key = run["run_key"]
        try:
            with ledger.lease(key):
                home_to_wake = pass_.advance_one(run)
        except RunBusyError:
            outcome["busy"].append(key)  # another driver (a CLI --wait, a worker) has it
            continue
        if home_to_wake:  # after the lease is released: the woken run takes it at once
            homes.wake(home_to_wake)
            log.info("run %s: woke its flow run %s to collect and join", key, home_to_wake)
    return outcome


@dataclass(frozen=True)
class _Pass:
    ledger: Ledger
    layout: inbox.InboxLayout
    outcome: dict[str, list[str]]
    advance: Advance
    finish: Finish
    on_progress: OnProgress
    on_failed: Callable[[dict[str, Any], Exception], None]
    homes: Homes
    log: Log

    def advance_one(self, listed: dict[str, Any]) -> str | None:
        """Advance one run (its lease held); returns the flow run to wake, if any."""
        key, ledger = listed["run_key"], self.ledger
        run = ledger.run(key)  # as it is now that we hold the lease: another pass may have finished it
        if run is None or run["state"] != RunState.OPEN:
            return None
        try:
            handle = runner.handle_for(ledger, key)
            provider = make_provider(handle.job.provider, handle.job.base_url)
            home = run.get("flow_run_id")
            where = self.homes.state(home) if home else GONE
            if where == BUSY:  # resuming or running: it is its own driver now
                self.outcome["busy"].append(key)
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
                self.outcome["advanced"].append(key)
                if work:
                    self.outcome["woken"].append(key)
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
            self.outcome["advanced"].append(key)
            if progress.complete:
                self.finish(ledger, handle, Path(run["output_path"]), bool(run["overwrite"]))
                settle_dropped_file(ledger, run, self.layout)
                self.log.info("run %s finished: %s", key, run["output_path"])
                self.outcome["finished"].append(key)
        except ProviderError as exc:  # the service or the network: try again next pass
            self.log.error("run %s stays open, the service call failed: %s", key, exc)
            self.outcome["unreachable"].append(key)
        except GrokBatchError as exc:
            self.log.error("run %s cannot continue: %s", key, exc)
            ledger.update_run(key, state=RunState.FAILED)
            settle_dropped_file(ledger, run, self.layout, exc)
            self.on_failed(run, exc)
            self.outcome["failed"].append(key)
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
