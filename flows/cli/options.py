"""Options several commands share (one declaration each), and the job fields built from them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli.render import fail
from tasks.infra.errors import GrokBatchError
from tasks.infra.work_copies import local_for

if TYPE_CHECKING:
    from tasks.spec.job import JobSpec

# -- the table and the job: run and estimate -----------------------------------------------------
InputPath = Annotated[
    Path,
    typer.Argument(
        metavar="INPUT",
        parser=local_for,  # s3://… stays a URL: its working copy here stands for it
        help="A table: .csv (also .csv.gz/.bz2/.zst/.lz4), .jsonl/.ndjson, .xlsx or .parquet; "
        "a path or a URL (s3://bucket/reviews.csv, gs://…).",
    ),
]
Sheet = Annotated[str | None, typer.Option(help="The sheet of an .xlsx input (default: the first).")]
OutputFormat = Annotated[
    list[str] | None,
    typer.Option("--output-format", help="Also write the output as csv or xlsx (repeatable)."),
]
JobFile = Annotated[Path | None, typer.Option("--job", "-j", help="Job YAML; flags override it.")]
Model = Annotated[str | None, typer.Option(help="Model, e.g. grok-4.3.")]
Prompt = Annotated[str | None, typer.Option(help="Template with {{ column }} placeholders.")]
Mode = Annotated[
    str | None,
    typer.Option(help="batch (default), sync (chat completions now), or auto (sync for small tables)."),
]
Provider = Annotated[
    str | None, typer.Option(help="xai (default) or openai (any OpenAI-compatible Batch API).")
]
Params = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="Request field KEY=VALUE (repeatable).")
]
MaxCostUsd = Annotated[
    float | None, typer.Option(help="Refuse to submit when the estimated cost is above this.")
]
Catalog = Annotated[
    Path | None, typer.Option(help="Model catalog YAML with prices (default: the built-in one).")
]
Encoding = Annotated[str, typer.Option(help="Text encoding of a CSV input.")]

# -- where state lives, and waiting: every command that touches a run ----------------------------
DATA_DIR = Path("data")
DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="GROK_BATCH_DATA_DIR",
        parser=local_for,  # a bucket URL: this machine's working copy of it
        help="Where runs (request shards, results), the inbox and the ledger live: a folder, or a "
        "bucket URL (s3://bucket/grok) shared by workers on many machines.",
    ),
]
Overwrite = Annotated[bool, typer.Option(help="Replace the output if it exists.")]
MAX_WAIT_S = 26 * 3600.0
MaxWait = Annotated[float, typer.Option(help="Stop waiting after this many seconds.")]

# Flags passed to the job as they are, by parameter name (= job field name).
_PLAIN_FIELDS = (
    "model",
    "prompt",
    "system",
    "id_column",
    "provider",
    "mode",
    "base_url",
    "name",
    "max_attempts",
    "result_prefix",
    "shard_max_lines",
    "shard_max_bytes",
    "max_cost_usd",
    "sheet",
)


def job_overrides(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The job fields a command's flags set, from its parameters by name. A flag the command
    does not have, or one left unset, is None, which build_job skips: the job file's value stands."""
    overrides = {field: flags.get(field) for field in _PLAIN_FIELDS}
    overrides["params"] = parse_params(flags.get("param"))
    overrides["catalog"] = _str_or_none(flags.get("catalog"))
    overrides["cache"] = None if flags.get("cache", True) else False
    overrides["output"] = _str_or_none(flags.get("output"))
    overrides["output_formats"] = flags.get("output_format") or None
    return overrides


def job_spec(job_file: Path | None, flags: Mapping[str, Any]) -> JobSpec:
    """The job file (if any) with the flags on top; an invalid job ends the command with one line."""
    from tasks.spec.job import build_job

    try:
        return build_job(job_file, job_overrides(flags))
    except GrokBatchError as exc:
        if job_file is None and "Field required" in str(exc):
            fail(
                GrokBatchError(
                    f"{exc}\nhint: pass a job file with --job JOB.yaml (see data/samples/reviews.job.yaml), "
                    "or --model and --prompt, e.g. --model grok-4.3 --prompt 'Classify: {{ text }}'"
                )
            )
        fail(exc)


def parse_params(values: list[str] | None) -> dict[str, Any] | None:
    if not values:
        return None
    import yaml

    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise GrokBatchError(f"--param {item!r}: write it as KEY=VALUE, e.g. --param temperature=0")
        params[key.strip()] = yaml.safe_load(raw)
    return params


def _str_or_none(path: Path | None) -> str | None:
    return str(path) if path else None
