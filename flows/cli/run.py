"""`run` and `estimate`: a table through the Batch API, or only its estimate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.options import (
    DATA_DIR,
    MAX_WAIT_S,
    Catalog,
    DataDir,
    Encoding,
    InputPath,
    JobFile,
    MaxCostUsd,
    MaxWait,
    Mode,
    Model,
    OutputFormat,
    Overwrite,
    Params,
    Prompt,
    Provider,
    Sheet,
    job_spec,
)
from flows.cli.render import fail, run_and_show, show_estimate
from tasks.infra.errors import GrokBatchError
from tasks.infra.work_copies import local_for, url_for

if TYPE_CHECKING:
    from tasks.spec.job import JobSpec

# Options only `run` has.
System = Annotated[str | None, typer.Option(help="System message sent with every row.")]
IdColumn = Annotated[str | None, typer.Option(help="Column with unique row ids (else row position).")]
BaseUrl = Annotated[
    str | None, typer.Option(help="API root, e.g. https://api.x.ai/v1 (default from the environment).")
]
Name = Annotated[str | None, typer.Option(help="Job name (shown in Prefect and reports).")]
MaxAttempts = Annotated[int | None, typer.Option(help="Rounds per row, counting the first.")]
ResultPrefix = Annotated[str | None, typer.Option(help="Prefix for added columns, e.g. grok_.")]
ShardMaxLines = Annotated[int | None, typer.Option(help="Requests per batch file (at most 50,000).")]
ShardMaxBytes = Annotated[int | None, typer.Option(help="Bytes per batch file (default 45 MB).")]
Cache = Annotated[
    bool, typer.Option(help="Reuse answers to identical requests; --no-cache forces fresh answers.")
]
DryRun = Annotated[
    bool, typer.Option(help="Prepare and print the estimate (rows, tokens, cost); send nothing.")
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        parser=local_for,
        help="Output .parquet, a path or a URL (default DATA_DIR/outbox/INPUT.parquet).",
    ),
]
Wait = Annotated[bool, typer.Option(help="Wait for the batches here; --no-wait submits and exits.")]
PollInterval = Annotated[float, typer.Option(help="First poll interval in seconds (backs off to 60).")]


def run(
    input_path: InputPath,
    job_file: JobFile = None,
    model: Model = None,
    prompt: Prompt = None,
    system: System = None,
    param: Params = None,
    id_column: IdColumn = None,
    provider: Provider = None,
    mode: Mode = None,
    base_url: BaseUrl = None,
    name: Name = None,
    max_attempts: MaxAttempts = None,
    result_prefix: ResultPrefix = None,
    shard_max_lines: ShardMaxLines = None,
    shard_max_bytes: ShardMaxBytes = None,
    max_cost_usd: MaxCostUsd = None,
    catalog: Catalog = None,
    cache: Cache = True,
    dry_run: DryRun = False,
    output: Output = None,
    output_format: OutputFormat = None,
    sheet: Sheet = None,
    overwrite: Overwrite = False,
    encoding: Encoding = "utf-8",
    wait: Wait = True,
    poll_interval: PollInterval = 2.0,
    max_wait: MaxWait = MAX_WAIT_S,
    data_dir: DataDir = DATA_DIR,
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
    spec = job_spec(job_file, locals())  # first: locals() is exactly the flags here
    if dry_run:
        _estimate(input_path, spec, data_dir, encoding)
        return
    from flows.here import run_here
    from tasks.doors.drive import WaitPolicy
    from tasks.infra.table_io import open_table

    policy = WaitPolicy(wait, poll_interval, max_wait_s=max_wait)
    run_and_show(
        lambda on_progress: run_here(
            open_table(url_for(input_path), encoding=encoding),
            spec,
            output,
            overwrite,
            data_dir,
            policy,
            on_progress,
        ),
        data_dir,
    )


def estimate(
    input_path: InputPath,
    job_file: JobFile = None,
    model: Model = None,
    prompt: Prompt = None,
    mode: Mode = None,
    provider: Provider = None,
    param: Params = None,
    max_cost_usd: MaxCostUsd = None,
    catalog: Catalog = None,
    sheet: Sheet = None,
    encoding: Encoding = "utf-8",
    data_dir: DataDir = DATA_DIR,
) -> None:
    """Rows, estimated input and output tokens, and the cost at batch and at standard
    prices; nothing is uploaded. Same as `run --dry-run`.

    Example:  grok-batch estimate data/samples/reviews.csv --job data/samples/reviews.job.yaml
    """
    spec = job_spec(job_file, locals())  # first: locals() is exactly the flags here
    _estimate(input_path, spec, data_dir, encoding)


def _estimate(input_path: Path, spec: JobSpec, data_dir: Path, encoding: str) -> None:
    from tasks.infra.table_io import open_table
    from tasks.start import dry_run

    try:
        estimate = dry_run(open_table(url_for(input_path), encoding=encoding), spec, data_dir / "runs")
    except GrokBatchError as exc:
        fail(exc)
    show_estimate(input_path, estimate, spec.max_cost_usd)
