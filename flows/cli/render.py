"""What the CLI prints: consoles, the progress bar, results, estimates, runs, and errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tasks.infra.errors import GrokBatchError
from tasks.infra.work_copies import local_for, url_for

if TYPE_CHECKING:
    from tasks.doors.control import RunDetail
    from tasks.money.estimate import Estimate

console = Console()
err_console = Console(stderr=True)


def fail(exc: Exception) -> NoReturn:
    """One red line on stderr and exit code 2: how the CLI reports an error the user can act on."""
    # Not wrapped by us (a path or command in it stays one piece to copy), not read as markup.
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


ProgressListener = Callable[[Any], None]


class ProgressBar:
    """A progress bar that appears with the first progress a run reports: a command refused
    by its checks prints its error alone, with no empty bar before it."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} requests"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("preparing", total=None)
        self.started = False

    def __call__(self, progress: Any) -> None:
        if not self.started:
            self.bar.start()
            self.started = True
        states = ", ".join(f"{n} {s}" for s, n in sorted(progress.states.items()))
        self.bar.update(
            self.task,
            description=f"round {progress.round_no} · {progress.batches} batch(es): {states}",
            completed=progress.finished,
            total=progress.requests,
        )

    def stop(self) -> None:
        if self.started:
            self.bar.stop()


def run_with_progress(call: Callable[[ProgressListener], dict[str, Any]]) -> dict[str, Any]:
    """Run a command's `call`, drawing the progress it reports to the listener it is given."""
    bar = ProgressBar()
    try:
        return call(bar)
    finally:
        bar.stop()


def run_and_show(call: Callable[[ProgressListener], dict[str, Any]], data_dir: Path) -> None:
    try:
        result = run_with_progress(call)
    except GrokBatchError as exc:
        fail(exc)
    show_result(result, data_dir)


def show_result(result: dict[str, Any], data_dir: Path) -> None:
    if result["state"] != "finished":
        console.print(
            f"\nRun [bold]{result['run_key']}[/] is still in progress at the service. Continue it with:\n"
            f"  grok-batch resume {result['run_key']} --data-dir {url_for(data_dir)}"
        )
        return
    from tasks.runner import report_path
    from tasks.stages.report import RunSummary, cost_lines

    summary = result["summary"]
    console.print(
        f"\nrun [bold]{summary['run_key']}[/]: {summary['rows']} rows, mode {summary['mode']}",
        highlight=False,
    )
    table = Table()
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, count in summary["by_status"].items():
        if count:
            table.add_row(status, str(count))
    console.print(table)
    if summary["error_examples"]:
        console.print("why rows were not answered (top reasons):")
        for error, count, example in summary["error_examples"][:5]:
            console.print(f"  {count} row(s): {error[:160]} (e.g. {example})", markup=False, highlight=False)
    tokens = summary["tokens"]
    console.print(
        f"tokens: prompt {tokens['prompt_tokens']} (cached {tokens['cached_tokens']}), "
        f"completion {tokens['completion_tokens']}, reasoning {tokens['reasoning_tokens']} · "
        f"rounds {summary['rounds']}"
    )
    for line in cost_lines(RunSummary(**summary)):
        console.print(line.removeprefix("- ").replace("**", ""), markup=False)
    for note in summary.get("notes") or []:
        err_console.print(f"[bold yellow]note:[/] {escape(note)}", soft_wrap=True, highlight=False)
    for text in summary["rejected_files"]:
        err_console.print(f"[bold red]Rejected by the service:[/] {text}")
    console.print(f"output: [bold]{summary['output_path']}[/]")
    report = report_path(local_for(summary["output_path"]))
    console.print(f"report: {url_for(report)}")
    console.print(f"report with charts: {url_for(report.with_suffix('.html'))}")


def show_estimate(input_path: Path, estimate: Estimate, max_cost_usd: float | None) -> None:
    console.print(f"[bold]Estimate for {input_path.name}[/] (nothing was sent)")
    for line in estimate.lines():
        console.print(f"  {line}")
    if max_cost_usd is not None:
        cost = estimate.cost_usd
        verdict = "within" if cost is not None and cost <= max_cost_usd else "ABOVE"
        console.print(f"  budget max_cost_usd ${max_cost_usd:,.4f}: the estimate is {verdict} it")


def show_runs(runs: list[dict[str, Any]], ledger_url: str) -> None:
    """One line per run; keys are shown whole (a prefix is what other commands take)."""
    console.print(f"runs in {ledger_url}")
    table = Table()
    table.add_column("run", no_wrap=True, min_width=16)
    for column in ("job", "state", "round", "input", "output"):
        table.add_column(column, overflow="fold")
    for r in runs:
        state = r["state"] + (" · cancel requested" if r["cancel_requested"] else "")
        table.add_row(
            r["run_key"], r["job_name"], state, str(r["round_no"]), r["input_path"], r["output_path"] or ""
        )
    console.print(table)


def show_run_detail(detail: RunDetail) -> None:
    run = detail.run
    console.print(f"run [bold]{run['run_key']}[/] · job {run['job_name']} · {run['state']}", highlight=False)
    if run["cancel_requested"]:
        console.print("cancel requested: nothing more is sent; finished results are kept")
    console.print(f"input: {run['input_path']}", markup=False, highlight=False)
    output = run["output_path"] or "(not set)"
    written = "written" if detail.output_exists else "not written yet"
    console.print(f"output: {output} ({written})", markup=False, highlight=False)
    shown = detail.as_dict()
    for r in shown["rounds"]:
        console.print(f"round {r['round']}: {r['finished']}/{r['requests']} requests finished")
    if detail.outcomes:
        console.print("rows so far: " + ", ".join(f"{n} {s}" for s, n in sorted(detail.outcomes.items())))
    console.print(f"figures: {detail.freshness}", markup=False, highlight=False)
    table = Table()
    for column in ("batch", "round", "requests", "step", "state", "finished", "message"):
        # Figures and states stay whole on one line; a long batch id or message folds.
        table.add_column(column, no_wrap=column not in ("batch", "message"), overflow="fold")
    for b in shown["batches"]:
        table.add_row(
            b["batch"], str(b["round"]), str(b["requests"]), b["step"], b["state"] or "", str(b["finished"]),
            b["message"] or "",
        )  # fmt: skip
    console.print(table)


def show_preview(output: Path) -> None:
    """The first rows of an output table, its main columns only."""
    import pyarrow.parquet as pq

    table = pq.read_table(output)
    preview = Table(title=f"first rows of {output} ({table.num_rows} rows, {table.num_columns} columns)")
    shown = [c for c in ("review_id", "text", "status", "response", "cost_usd") if c in table.column_names]
    for column in shown:
        preview.add_column(column, overflow="fold", max_width=48)
    for row in table.select(shown).slice(0, 8).to_pylist():
        preview.add_row(*[str(row[c])[:120] for c in shown])
    console.print(preview)
