"""Inbox admission: settled files in the inbox become runs, one pass at a time.

Each claimed file is checked for a run it repeats (same content and job), given an
outbox name no other open run holds, prepared and, in batch mode, submitted. One bad
drop never stops the others: it moves to failed/ with a note. The folders may be on a
store (tasks.doors.inbox): a claimed object's run records its URL, and its output goes to
the outbox there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks import runner, start
from tasks.doors import inbox
from tasks.infra.errors import PassFailedError, ProviderError
from tasks.infra.ledger import Ledger
from tasks.infra.logs import LOGGER, Log
from tasks.infra.table_io import open_table
from tasks.infra.work_copies import local_for, url_for
from tasks.lifecycle import RunState
from tasks.providers.registry import make_provider

Prepare = Callable[[Ledger, start.Checked, Path], runner.RunHandle]
# Starts the flow run that is a dropped file's home, as a job started in the UI has one
# (returns its id), or None where there is none: then admission submits the batches itself
# and the collector finishes the run.
StartHome = Callable[[start.Checked, Path], str | None]


def no_home(_checked: start.Checked, _output: Path) -> str | None:
    return None


def admit_settled(
    ledger: Ledger,
    layout: inbox.InboxLayout,
    runs_root: Path,
    settle_s: float,
    *,
    prepare: Prepare = start.prepare,
    submit: runner.StageCall = runner.PLAIN_STAGES.submit,
    start_home: StartHome = no_home,
    log: Log = LOGGER,
) -> dict[str, list[str]]:
    """Claim every dropped table that has stopped growing and start its run; returns the
    file names by what happened: submitted, duplicates, failed."""
    layout.ensure()
    outcome: dict[str, list[str]] = {"submitted": [], "duplicates": [], "failed": []}
    recorded = {local_for(r["input_path"]) for r in ledger.find_runs("") if r["origin"] == "inbox"}
    for path in inbox.stranded(layout, recorded):
        back = inbox.return_to_inbox(path, layout, ledger)
        if back is not None:
            log.warning("%s was claimed by a scan that died before recording it; taken again", back.name)
    for table in inbox.settled_tables(layout.inbox, settle_s):
        claimed: inbox.Claimed | None = None
        try:
            claimed = inbox.claim(table, layout, ledger)
            if claimed is None:
                continue  # another scan took it
            log.info("claimed %s (job %s) into %s", table.name, claimed.job.name, claimed.path.parent.name)
            kind = _admit(ledger, claimed, layout, runs_root, prepare, submit, start_home, log)
            outcome[kind].append(table.name)
        except Exception as exc:  # one bad drop never stops the scan of the others
            if claimed is None and not (table.is_symlink() or inbox.exists(table)):
                continue  # a scan running beside this one claimed it while we looked at it
            log.error("%s cannot be processed: %s", table.name, exc)
            inbox.fail(claimed.path if claimed else table, exc, layout)
            outcome["failed"].append(table.name)
    return outcome


def settle_dropped_file(
    ledger: Ledger, run: dict[str, Any], layout: inbox.InboxLayout, error: Exception | None = None
) -> None:
    """A run from the inbox ended: its input moves to archive/, or to failed/ with the reason,
    and the run names the file where it now is."""
    if run.get("origin") != "inbox":
        return
    claimed = local_for(run["input_path"])  # recorded as its URL when it is on a store
    moved = inbox.archive(claimed, layout) if error is None else inbox.fail(claimed, error, layout)
    if inbox.exists(moved):
        ledger.update_run(run["run_key"], input_path=inbox.named(moved))


def raise_if_failed(outcome: dict[str, list[str]]) -> None:
    """End the scan Failed (alerts fire) when a dropped file could not be processed."""
    if outcome["failed"]:
        names = ", ".join(outcome["failed"])
        raise PassFailedError(
            f"{len(outcome['failed'])} dropped file(s) could not be processed: {names}; "
            "each is in failed/ with a note saying why",
            outcome,
        )


def _admit(
    ledger: Ledger,
    claimed: inbox.Claimed,
    layout: inbox.InboxLayout,
    runs_root: Path,
    prepare: Prepare,
    submit: runner.StageCall,
    start_home: StartHome,
    log: Log,
) -> str:
    taken_outputs = {local_for(r["output_path"]) for r in ledger.open_runs() if r["output_path"]}
    output = inbox.output_for(claimed.name, claimed.sha256, layout, taken_outputs)
    source = open_table(url_for(claimed.path))  # the run records the claimed object's URL
    checked = start.check(source, claimed.job, output, input_sha=claimed.sha256)
    key = checked.run_key
    known = ledger.run(key)
    if known is not None and known["state"] != RunState.FAILED:
        log.warning("%s has the same content and job as run %s; not sent again", claimed.name, key)
        inbox.archive(claimed.path, layout)
        return "duplicates"
    provider = make_provider(checked.job.provider, checked.job.base_url)  # no API key: refused here
    handle = prepare(ledger, checked, runs_root)
    with start.taken(ledger, handle, start.attempt_of(handle, output, origin="inbox")):
        # Recorded as the inbox's run (checked, prepared, its output name held) and its home
        # started and named under the same lease: a collector pass never sees the run without
        # its home and drives it itself (the home would then wait on the lease).
        home = start_home(checked, output)
        if home is not None:
            ledger.update_run(key, flow_run_id=home)
    if home is not None:
        log.info(
            "%s is run %s (%s rows): its home is flow run %s", claimed.name, key, handle.plan.total_rows, home
        )
        return "submitted"
    with ledger.lease(key):
        if handle.plan.mode == "batch":  # sync runs are answered by the collector
            try:
                submit(ledger, provider, handle)
            except ProviderError as exc:  # the run is recorded: the collector submits it later
                log.error("%s is queued; submitting failed for now: %s", claimed.name, exc)
                return "submitted"
    log.info(
        "submitted %s as run %s (%s rows, output %s)",
        claimed.name,
        key,
        handle.plan.total_rows,
        url_for(output),
    )
    return "submitted"
