"""The `grok-batch` command line: the typer app and its commands.

run.py has run and estimate; inspect.py status, cancel and resume; local.py emulator, demo
and serve. options.py declares the options they share, render.py everything they print, and
env.py the Prefect defaults applied before any command runs. Commands import Prefect, pyarrow
and the pipeline lazily, so `grok-batch --help` stays fast.
"""

from __future__ import annotations

import typer

from flows.cli import inspect, local, run
from flows.cli.env import quiet_prefect_defaults

app = typer.Typer(
    name="grok-batch",
    help=(
        "Run every row of a table (CSV or Parquet) through xAI's Grok Batch API and get the table "
        "back as Parquet with an answer, usage, cost and status on every row.\n\n"
        "Try it offline:  grok-batch demo\n\n"
        "Real run:  export XAI_API_KEY=...;  grok-batch run reviews.csv --model grok-4.3 "
        "--prompt 'Classify the sentiment: {{ text }}' --output reviews.parquet"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback()
def _before_every_command() -> None:
    # Here rather than at import: it runs for `main()` and for tests driving `app` alike,
    # and before a command's first (lazy) Prefect import.
    quiet_prefect_defaults()


for _command in (
    run.run,
    run.estimate,
    inspect.resume,
    inspect.status,
    inspect.cancel,
    local.serve,
    local.emulator,
    local.demo,
):
    app.command()(_command)


def main() -> None:
    app()
