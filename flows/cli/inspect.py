"""`status`, `cancel` and `resume`: what the ledger knows about runs, and acting on one."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.options import DATA_DIR, MAX_WAIT_S, DataDir, MaxWait, Overwrite
from flows.cli.render import console, fail, run_and_show, show_run_detail, show_runs
from tasks.infra.errors import GrokBatchError
from tasks.infra.work_copies import local_for


def resume(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="Run key (or a unique prefix of it).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", parser=local_for, help="Override the run's output: a path or a URL."),
    ] = None,
    overwrite: Overwrite = False,
    wait: Annotated[bool, typer.Option(help="Wait for the batches to finish.")] = True,
    poll_interval: Annotated[float, typer.Option(help="First poll interval in seconds.")] = 2.0,
    max_wait: MaxWait = MAX_WAIT_S,
    data_dir: DataDir = DATA_DIR,
) -> None:
    """Continue a run from the ledger: after a crash, a --no-wait run, or a wait limit.

    Example:  grok-batch resume 3f2a9c   (see `grok-batch status` for run keys)
    """
    from flows.here import resume_here
    from tasks.doors.drive import WaitPolicy

    policy = WaitPolicy(wait, poll_interval, max_wait_s=max_wait)
    run_and_show(
        lambda on_progress: resume_here(data_dir, run_key, output, overwrite, policy, on_progress), data_dir
    )


def status(
    run_key: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Show one run in detail.")] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            help="Ask the service for live counts of RUN's open batches (--no-refresh: ledger only)."
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    data_dir: DataDir = DATA_DIR,
) -> None:
    """List the runs in the ledger, or one run in detail: its state, cancel request, rounds,
    rows by outcome so far, output, and its batches with live counts from the service.

    Example:  grok-batch status   ·   grok-batch status 3f2a9c   ·   grok-batch status 3f2a9c --json
    """
    import json

    from tasks.doors.control import run_status
    from tasks.infra.ledger import Ledger, default_ledger_url

    url = default_ledger_url(data_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        if as_json:
            print(json.dumps({"runs": []}))
            return
        console.print(f"no runs yet: {url} does not exist (is --data-dir right?)")
        return
    with closing(Ledger(url)) as ledger:
        try:
            found = run_status(ledger, run_key, refresh=refresh)
        except GrokBatchError as exc:
            fail(exc)
        if as_json:
            shown = found.detail.as_dict() if found.detail else {"runs": found.runs}
            print(json.dumps(shown, indent=2, default=str))
            return
        if not found.runs:
            console.print(f"no runs in {ledger.display_url}" + (f" matching {run_key!r}" if run_key else ""))
            return
        if found.detail is None:
            show_runs(found.runs, ledger.display_url)
        else:
            show_run_detail(found.detail)


def cancel(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="Run key (or a unique prefix).")],
    data_dir: DataDir = DATA_DIR,
) -> None:
    """Cancel a run: its batches at the service, and any shard or retry round not yet sent.
    Finished results are kept; resume (or collect-pending) collects them.

    Example:  grok-batch cancel 3f2a9c && grok-batch resume 3f2a9c
    """
    from tasks.doors.control import cancel_run
    from tasks.infra.ledger import Ledger, default_ledger_url

    with closing(Ledger(default_ledger_url(data_dir))) as ledger:
        try:
            outcome = cancel_run(ledger, run_key)
        except GrokBatchError as exc:
            fail(exc)
    key = outcome.run_key
    if outcome.nothing_to_cancel:
        console.print(f"run {key} is {outcome.state}: nothing to cancel")
        return
    again = "cancel was already requested; " if outcome.already_requested else ""
    console.print(
        f"{again}cancelled {outcome.cancelled_at_service} batch(es) at the service; nothing more will be "
        f"sent. `grok-batch resume {key}` collects what finished and writes the output"
    )
