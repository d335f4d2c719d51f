"""`status`, `cancel` and `resume`: what the ledger knows about runs, and acting on one."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.options import DATA_DIR, MAX_WAIT_S, DataDir, MaxWait, Overwrite
from flows.cli.render import console, fail, run_and_show, show_batches, show_runs
from tasks.infra.errors import GrokBatchError


def resume(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="Run key (or a unique prefix of it).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Override the run's output path.")
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
    from flows.run_job import resume_batch_job

    run_and_show(
        lambda: resume_batch_job(
            run_key=run_key,
            output=str(output) if output else None,
            overwrite=overwrite,
            wait=wait,
            data_dir=str(data_dir),
            poll_interval_s=poll_interval,
            max_wait_s=max_wait,
        ),
        data_dir,
    )


def status(
    run_key: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Show one run's batches.")] = None,
    data_dir: DataDir = DATA_DIR,
) -> None:
    """List runs in the ledger, or the batches of one run. Reads only local state.

    Example:  grok-batch status   ·   grok-batch status 3f2a9c
    """
    from tasks.doors.control import run_status
    from tasks.infra.ledger import Ledger, default_ledger_url

    url = default_ledger_url(data_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        console.print(f"no runs yet: {url} does not exist (is --data-dir right?)")
        return
    with closing(Ledger(url)) as ledger:
        found = run_status(ledger, run_key)
        if not found.runs:
            console.print(f"no runs in {ledger.display_url}" + (f" matching {run_key!r}" if run_key else ""))
            return
        show_runs(found.runs, ledger.display_url)
        if found.batches:
            show_batches(found.batches)


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
            key, cancelled = cancel_run(ledger, run_key)
        except GrokBatchError as exc:
            fail(exc)
    console.print(f"cancelled {cancelled} batch(es); `grok-batch resume {key}` collects what finished")
