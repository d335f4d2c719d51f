"""The `grok-batch` command line."""

from __future__ import annotations

import logging
import os

# Quiet, offline-friendly Prefect defaults for a terminal tool (the user's env wins).
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
if not os.environ.get("PREFECT_API_URL"):
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tasks.infra.errors import GrokBatchError
from tasks.runner import report_path


class _ShownOnce(logging.Filter):
    """Drop Prefect's traceback for errors the CLI reports itself in one clear line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GrokBatchError):
            return False
        message = record.getMessage()
        return not any(f"exception {name}:" in message for name in _user_error_names(GrokBatchError))


def _user_error_names(base: type[Exception]) -> set[str]:
    names = {base.__name__}
    for subclass in base.__subclasses__():
        names |= _user_error_names(subclass)
    return names


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_name).addFilter(_ShownOnce())

console = Console()
err_console = Console(stderr=True)

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

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="GROK_BATCH_DATA_DIR",
        help="Where runs (request shards, results) and the ledger live.",
    ),
]


def _parse_params(values: list[str] | None) -> dict[str, Any] | None:
    if not values:
        return None
    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise GrokBatchError(f"--param {item!r}: write it as KEY=VALUE, e.g. --param temperature=0")
        params[key.strip()] = yaml.safe_load(raw)
    return params


class _ProgressBar:
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

    def __call__(self, progress: Any) -> None:
        states = ", ".join(f"{n} {s}" for s, n in sorted(progress.states.items()))
        self.bar.update(
            self.task,
            description=f"round {progress.round_no} · {progress.batches} batch(es): {states}",
            completed=progress.finished,
            total=progress.requests,
        )


def _run_flow(call: Any) -> dict[str, Any]:
    """Call a flow with a progress bar fed by its progress listeners."""
    from flows import run_job

    bar = _ProgressBar()
    run_job.progress_listeners.append(bar)
    try:
        with bar.bar:
            result: dict[str, Any] = call()
    finally:
        run_job.progress_listeners.remove(bar)
    return result


def _run_and_show(call: Any, data_dir: Path) -> None:
    try:
        result = _run_flow(call)
    except GrokBatchError as exc:
        _fail(exc)
    _show_result(result, data_dir)


def _show_result(result: dict[str, Any], data_dir: Path) -> None:
    if result["state"] != "finished":
        console.print(
            f"\nRun [bold]{result['run_key']}[/] is still in progress at the service. Continue it with:\n"
            f"  grok-batch resume {result['run_key']} --data-dir {data_dir}"
        )
        return
    from tasks.stages.report import RunSummary, cost_lines

    summary = result["summary"]
    table = Table(title=f"run {summary['run_key']}: {summary['rows']} rows, mode {summary['mode']}")
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, count in summary["by_status"].items():
        if count:
            table.add_row(status, str(count))
    console.print(table)
    tokens = summary["tokens"]
    console.print(
        f"tokens: prompt {tokens['prompt_tokens']} (cached {tokens['cached_tokens']}), "
        f"completion {tokens['completion_tokens']}, reasoning {tokens['reasoning_tokens']} · "
        f"rounds {summary['rounds']}"
    )
    for line in cost_lines(RunSummary(**summary)):
        console.print(line.removeprefix("- ").replace("**", ""), markup=False)
    for text in summary["rejected_files"]:
        err_console.print(f"[bold red]Rejected by the service:[/] {text}")
    console.print(f"output: [bold]{summary['output_path']}[/]")
    console.print(f"report: {report_path(Path(summary['output_path']))}")


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.command()
def run(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="A .csv or .parquet table.")],
    job_file: Annotated[Path | None, typer.Option("--job", "-j", help="Job YAML; flags override it.")] = None,
    model: Annotated[str | None, typer.Option(help="Model, e.g. grok-4.3.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Template with {{ column }} placeholders.")] = None,
    system: Annotated[str | None, typer.Option(help="System message sent with every row.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Request field KEY=VALUE (repeatable).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column with unique row ids (else row position).")
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="xai (default) or openai (any OpenAI-compatible Batch API).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="batch (default), sync (chat completions now), or auto (sync for small tables)."),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="API root, e.g. https://api.x.ai/v1 (default from the environment).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name (shown in Prefect and reports).")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Rounds per row, counting the first.")] = None,
    result_prefix: Annotated[str | None, typer.Option(help="Prefix for added columns, e.g. grok_.")] = None,
    shard_max_lines: Annotated[
        int | None, typer.Option(help="Requests per batch file (at most 50,000).")
    ] = None,
    shard_max_bytes: Annotated[int | None, typer.Option(help="Bytes per batch file (default 45 MB).")] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="Refuse to submit when the estimated cost is above this.")
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="Model catalog YAML with prices (default: the built-in one).")
    ] = None,
    cache: Annotated[
        bool, typer.Option(help="Reuse answers to identical requests; --no-cache forces fresh answers.")
    ] = True,
    dry_run: Annotated[
        bool, typer.Option(help="Prepare and print the estimate (rows, tokens, cost); send nothing.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output .parquet (default DATA_DIR/outbox/INPUT.parquet)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the output if it exists.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of a CSV input.")] = "utf-8",
    wait: Annotated[
        bool, typer.Option(help="Wait for the batches here; --no-wait submits and exits.")
    ] = True,
    poll_interval: Annotated[
        float, typer.Option(help="First poll interval in seconds (backs off to 60).")
    ] = 2.0,
    max_wait: Annotated[float, typer.Option(help="Stop waiting after this many seconds.")] = 26 * 3600.0,
    data_dir: DataDir = Path("data"),
) -> None:
    """Run a table through the Batch API and write it back with an answer on every row.

    Example:

      export XAI_API_KEY=...   # or a Prefect Secret block named xai-api-key

      grok-batch run reviews.csv --model grok-4.3 --prompt 'Classify: {{ text }}' -o reviews.parquet

      grok-batch run reviews.csv --job reviews.job.yaml --param temperature=0

      grok-batch run small.csv --job reviews.job.yaml --mode sync    # answers in seconds

      grok-batch run reviews.csv --job reviews.job.yaml --provider openai --model gpt-4.1-mini

    XAI_BASE_URL (or OPENAI_BASE_URL, or --base-url) points it at another server speaking
    the provider's protocol. Rerunning the same command after a crash re-attaches to the
    batches already submitted (or, in sync mode, to the answers already received);
    nothing is paid twice.
    """
    from flows.run_job import run_batch_job
    from tasks.spec.job import build_job

    try:
        overrides = {
            "model": model,
            "prompt": prompt,
            "system": system,
            "params": _parse_params(param),
            "id_column": id_column,
            "provider": provider,
            "mode": mode,
            "base_url": base_url,
            "name": name,
            "max_attempts": max_attempts,
            "result_prefix": result_prefix,
            "shard_max_lines": shard_max_lines,
            "shard_max_bytes": shard_max_bytes,
            "max_cost_usd": max_cost_usd,
            "catalog": str(catalog) if catalog else None,
            "cache": None if cache else False,
            "output": str(output) if output else None,
        }
        spec = build_job(job_file, overrides)
    except GrokBatchError as exc:
        _fail(exc)
    if dry_run:
        _print_estimate(input_path, spec, data_dir, encoding)
        return
    _run_and_show(
        lambda: run_batch_job(
            input_path=str(input_path),
            job=spec,
            output=str(output) if output else None,
            overwrite=overwrite,
            wait=wait,
            data_dir=str(data_dir),
            encoding=encoding,
            poll_interval_s=poll_interval,
            max_wait_s=max_wait,
        ),
        data_dir,
    )


def _print_estimate(input_path: Path, spec: Any, data_dir: Path, encoding: str) -> None:
    from tasks.infra.table_io import TableSource
    from tasks.runner import dry_run

    try:
        estimate = dry_run(TableSource(input_path, encoding=encoding), spec, data_dir / "runs")
    except GrokBatchError as exc:
        _fail(exc)
    console.print(f"[bold]Estimate for {input_path.name}[/] (nothing was sent)")
    for line in estimate.lines():
        console.print(f"  {line}")
    if spec.max_cost_usd is not None:
        cost = estimate.cost_usd
        verdict = "within" if cost is not None and cost <= spec.max_cost_usd else "ABOVE"
        console.print(f"  budget max_cost_usd ${spec.max_cost_usd:,.4f}: the estimate is {verdict} it")


@app.command()
def estimate(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="A .csv or .parquet table.")],
    job_file: Annotated[Path | None, typer.Option("--job", "-j", help="Job YAML; flags override it.")] = None,
    model: Annotated[str | None, typer.Option(help="Model, e.g. grok-4.3.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Template with {{ column }} placeholders.")] = None,
    mode: Annotated[str | None, typer.Option(help="batch, sync or auto.")] = None,
    provider: Annotated[str | None, typer.Option(help="xai or openai.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Request field KEY=VALUE (repeatable).")
    ] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Say whether the estimate fits.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Model catalog YAML with prices.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of a CSV input.")] = "utf-8",
    data_dir: DataDir = Path("data"),
) -> None:
    """Rows, estimated input and output tokens, and the cost at batch and at standard
    prices; nothing is uploaded. Same as `run --dry-run`.

    Example:  grok-batch estimate data/samples/reviews.csv --job data/samples/reviews.job.yaml
    """
    from tasks.spec.job import build_job

    overrides = {
        "model": model,
        "prompt": prompt,
        "mode": mode,
        "provider": provider,
        "params": _parse_params(param),
        "max_cost_usd": max_cost_usd,
        "catalog": str(catalog) if catalog else None,
    }
    try:
        spec = build_job(job_file, overrides)
    except GrokBatchError as exc:
        _fail(exc)
    _print_estimate(input_path, spec, data_dir, encoding)


@app.command()
def resume(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="Run key (or a unique prefix of it).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Override the run's output path.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the output if it exists.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the batches to finish.")] = True,
    poll_interval: Annotated[float, typer.Option(help="First poll interval in seconds.")] = 2.0,
    max_wait: Annotated[float, typer.Option(help="Stop waiting after this many seconds.")] = 26 * 3600.0,
    data_dir: DataDir = Path("data"),
) -> None:
    """Continue a run from the ledger: after a crash, a --no-wait run, or a wait limit.

    Example:  grok-batch resume 3f2a9c   (see `grok-batch status` for run keys)
    """
    from flows.run_job import resume_batch_job

    _run_and_show(
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


@app.command()
def status(
    run_key: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Show one run's batches.")] = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """List runs in the ledger, or the batches of one run. Reads only local state.

    Example:  grok-batch status   ·   grok-batch status 3f2a9c
    """
    from tasks.infra.ledger import Ledger, default_ledger_url

    url = default_ledger_url(data_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        console.print(f"no runs yet: {url} does not exist (is --data-dir right?)")
        return
    ledger = Ledger(url)
    runs = ledger.find_runs(run_key or "")
    if not runs:
        console.print(f"no runs in {ledger.display_url}" + (f" matching {run_key!r}" if run_key else ""))
        return
    table = Table(title=f"runs in {ledger.display_url}")
    for column in ("run", "job", "input", "state", "round", "output"):
        table.add_column(column)
    for r in runs:
        table.add_row(
            r["run_key"],
            r["job_name"],
            r["input_path"],
            r["state"],
            str(r["round_no"]),
            r["output_path"] or "",
        )
    console.print(table)
    if run_key and len(runs) == 1:
        batches = Table(title="batches")
        for column in ("batch", "round", "requests", "step", "state", "finished", "message"):
            batches.add_column(column)
        for b in ledger.batches(runs[0]["run_key"]):
            batches.add_row(
                b.batch_id or b.batch_name,
                str(b.round_no),
                str(b.lines),
                b.step,
                b.state or "",
                str(b.finished),
                b.message or "",
            )
        console.print(batches)


@app.command()
def cancel(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="Run key (or a unique prefix).")],
    data_dir: DataDir = Path("data"),
) -> None:
    """Cancel a run: its batches at the service, and any shard or retry round not yet sent.
    Finished results are kept; resume (or collect-pending) collects them.

    Example:  grok-batch cancel 3f2a9c && grok-batch resume 3f2a9c
    """
    from tasks.infra.ledger import Ledger, default_ledger_url
    from tasks.providers.registry import make_provider
    from tasks.runner import handle_for

    ledger = Ledger(default_ledger_url(data_dir))
    runs = ledger.find_runs(run_key)
    if len(runs) != 1:
        _fail(GrokBatchError(f"run {run_key!r} matches {len(runs)} runs"))
    ledger.update_run(runs[0]["run_key"], cancel_requested=True)  # no new batches or rounds from now
    try:
        job = handle_for(ledger, runs[0]["run_key"]).job
        provider = make_provider(job.provider, job.base_url)
        cancelled = 0
        for b in ledger.batches(runs[0]["run_key"]):
            if b.batch_id and b.step == "created":
                provider.cancel(b.batch_id)
                cancelled += 1
    except GrokBatchError as exc:
        _fail(exc)
    console.print(
        f"cancelled {cancelled} batch(es); `grok-batch resume {runs[0]['run_key']}` collects what finished"
    )


@app.command()
def serve(
    inbox: Annotated[Path | None, typer.Option(help="Inbox folder (default DATA_DIR/inbox).")] = None,
    scan_interval: Annotated[float, typer.Option(help="Seconds between inbox scans.")] = 60.0,
    collect_interval: Annotated[float, typer.Option(help="Seconds between collector passes.")] = 120.0,
    settle: Annotated[float, typer.Option(help="A dropped file must be unchanged this long.")] = 10.0,
    data_dir: DataDir = Path("data"),
) -> None:
    """Serve the run-job, scan-inbox and collect-pending deployments from this process.

    Needs a Prefect server (PREFECT_API_URL); runs appear in its UI.

    Example:

      prefect server start &   export PREFECT_API_URL=http://127.0.0.1:4200/api

      grok-batch serve --scan-interval 30   # then drop reviews.csv into data/inbox/
    """
    from flows.serve import serve_all

    serve_all(
        data_dir=str(data_dir),
        inbox_dir=str(inbox) if inbox else None,
        scan_interval_s=scan_interval,
        collect_interval_s=collect_interval,
        settle_s=settle,
    )


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    api_key: Annotated[str, typer.Option(help="Bearer token the emulator accepts.")] = "emulator-key",
    processing_s: Annotated[float, typer.Option(help="Seconds for a batch's requests to finish.")] = 5.0,
    parse_delay_s: Annotated[float, typer.Option(help="Seconds a new batch shows zero counters.")] = 1.0,
    fail_rate: Annotated[float, typer.Option(help="Fraction of requests that fail.")] = 0.0,
    rate_429: Annotated[float, typer.Option("--rate-429", help="Fraction of calls answered 429.")] = 0.0,
    rate_500: Annotated[float, typer.Option("--rate-500", help="Fraction of calls answered 500.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Fraction of connections dropped.")] = 0.0,
    expire_after_s: Annotated[float, typer.Option(help="Seconds until a batch expires.")] = 86_400.0,
    protocol: Annotated[
        str,
        typer.Option(help="What /v1 speaks: xai, or openai (OpenAI's Batch API is always at /openai/v1)."),
    ] = "xai",
) -> None:
    """Serve a local emulator of xAI's Batch API, and of OpenAI's at /openai/v1
    (no key, no network needed).

    Example:

      grok-batch emulator --port 8000 &

      export XAI_BASE_URL=http://127.0.0.1:8000/v1 XAI_API_KEY=emulator-key

      grok-batch run data/samples/reviews.csv --job data/samples/reviews.job.yaml

      export OPENAI_BASE_URL=http://127.0.0.1:8000/openai/v1 OPENAI_API_KEY=emulator-key

      grok-batch run data/samples/reviews.csv --job data/samples/reviews.job.yaml --provider openai
    """
    from emulator import EmulatorConfig, RunningEmulator
    from emulator.config import PROTOCOLS

    if protocol not in PROTOCOLS:
        _fail(GrokBatchError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"))
    config = EmulatorConfig(
        api_key=api_key,
        processing_s=processing_s,
        parse_delay_s=parse_delay_s,
        fail_rate=fail_rate,
        rate_429=rate_429,
        rate_500=rate_500,
        drop_rate=drop_rate,
        expire_after_s=expire_after_s,
        protocol=protocol,
    )
    server = RunningEmulator(config, host=host, port=port).start()
    console.print(
        f"batch emulator: {protocol} protocol on {server.url}, OpenAI protocol on {server.openai_url}  "
        f"(API key {api_key}; Ctrl-C stops)"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


@app.command()
def demo(
    samples: Annotated[Path, typer.Option(help="Folder with reviews.csv and reviews.job.yaml.")] = Path(
        "data/samples"
    ),
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the demo writes its result.")] = Path(
        "data/outbox/reviews.parquet"
    ),
) -> None:
    """Run the sample job end to end against the local emulator and show the result.

    Example:  grok-batch demo   (this is what `make demo` runs)
    """
    import pyarrow.parquet as pq

    from emulator import EmulatorConfig, RunningEmulator
    from flows.run_job import run_batch_job
    from tasks.spec.job import build_job

    scratch = Path(tempfile.mkdtemp(prefix="grok-batch-demo-"))
    with RunningEmulator(
        EmulatorConfig(api_key="emulator-key", parse_delay_s=0.5, processing_s=3.0)
    ) as server:
        os.environ["XAI_BASE_URL"] = server.url
        os.environ["XAI_API_KEY"] = "emulator-key"
        console.print(
            f"[bold yellow]Demo:[/] answers come from the LOCAL EMULATOR at {server.url}, not from Grok. "
            "Set XAI_API_KEY and use `grok-batch run` for real answers."
        )
        try:
            spec = build_job(samples / "reviews.job.yaml")
            result = _run_flow(
                lambda: run_batch_job(
                    input_path=str(samples / "reviews.csv"),
                    job=spec,
                    output=str(output),
                    overwrite=True,
                    data_dir=str(scratch),
                    poll_interval_s=0.5,
                    max_poll_interval_s=2.0,
                    max_wait_s=300,
                )
            )
        except GrokBatchError as exc:
            _fail(exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    _show_result(result, scratch)
    table = pq.read_table(output)
    preview = Table(title=f"first rows of {output} ({table.num_rows} rows, {table.num_columns} columns)")
    shown = [c for c in ("review_id", "text", "status", "response", "cost_usd") if c in table.column_names]
    for column in shown:
        preview.add_column(column, overflow="fold", max_width=48)
    for row in table.select(shown).slice(0, 8).to_pylist():
        preview.add_row(*[str(row[c])[:120] for c in shown])
    console.print(preview)
    console.print("[bold yellow]These answers came from the local emulator.[/]")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
