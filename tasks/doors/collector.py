"""The collector's pass: advance every open run once, finish those that are complete.

Which errors keep a run open (the service or the network: the next pass tries again) and
which fail it (anything a person must fix) is decided here, for every door that collects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks import runner
from tasks.doors import inbox
from tasks.doors.drive import Advance, Finish
from tasks.infra.errors import GrokBatchError, ProviderError
from tasks.infra.ledger import Ledger, RunBusyError
from tasks.infra.logs import LOGGER, Log
from tasks.lifecycle import RunState
from tasks.providers.registry import make_provider

OnProgress = Callable[[dict[str, Any], runner.Progress], None]


def collect_pass(
    ledger: Ledger,
    layout: inbox.InboxLayout,
    *,
    advance: Advance = runner.advance,
    finish: Finish = runner.finish,
    on_progress: OnProgress = lambda _run, _progress: None,
    log: Log = LOGGER,
) -> dict[str, list[str]]:
    """Advance every open run whose lease is free by one pass; returns the run keys by
    what happened to them: advanced, finished, failed, busy, unreachable."""
    outcome: dict[str, list[str]] = {
        kind: [] for kind in ("advanced", "finished", "failed", "busy", "unreachable")
    }
    for run in ledger.open_runs():
        key = run["run_key"]
        try:
            with ledger.lease(key):
                _advance_one(ledger, run, layout, outcome, advance, finish, on_progress, log)
        except RunBusyError:
            outcome["busy"].append(key)  # another driver (a CLI --wait, a worker) has it
    return outcome


def _advance_one(
    ledger: Ledger,
    run: dict[str, Any],
    layout: inbox.InboxLayout,
    outcome: dict[str, list[str]],
    advance: Advance,
    finish: Finish,
    on_progress: OnProgress,
    log: Log,
) -> None:
    key = run["run_key"]
    try:
        handle = runner.handle_for(ledger, key)
        progress = advance(ledger, make_provider(handle.job.provider, handle.job.base_url), handle)
        on_progress(run, progress)
        outcome["advanced"].append(key)
        if progress.complete:
            finish(ledger, handle, Path(run["output_path"]), bool(run["overwrite"]))
            if run["origin"] == "inbox":
                inbox.archive(Path(run["input_path"]), layout)
            outcome["finished"].append(key)
    except ProviderError as exc:  # the service or the network: try again next pass
        log.error("run %s stays open, the service call failed: %s", key, exc)
        outcome["unreachable"].append(key)
    except GrokBatchError as exc:
        log.error("run %s cannot continue: %s", key, exc)
        ledger.update_run(key, state=RunState.FAILED)
        if run["origin"] == "inbox":
            inbox.fail(Path(run["input_path"]), exc, layout)
        outcome["failed"].append(key)


def raise_if_unreachable(outcome: dict[str, list[str]]) -> None:
    """Fail the pass (so alerts fire) when the service could not be reached; the runs stay open."""
    if outcome["unreachable"]:
        raise ProviderError(
            f"{len(outcome['unreachable'])} run(s) could not reach the batch service; they stay open "
            "and the next pass tries again"
        )
