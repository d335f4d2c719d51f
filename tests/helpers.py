"""Test helpers: write tables, drive a run with the plain stage functions, recompute answers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from emulator.completions import expected_answer
from tasks import runner
from tasks.job import JobSpec
from tasks.ledger import Ledger, default_ledger_url
from tasks.providers.xai import XaiProvider
from tasks.report import RunSummary
from tasks.table_io import TableSource


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def drive_to_end(
    input_path: Path,
    job: JobSpec,
    data_dir: Path,
    output: Path,
    *,
    timeout_s: float = 60.0,
    overwrite: bool = False,
) -> RunSummary:
    """Run the pipeline with the plain functions (no Prefect), bounded in time."""
    ledger = Ledger(default_ledger_url(data_dir))
    try:
        provider = XaiProvider()
        handle = runner.start_run(TableSource(input_path), job, data_dir / "runs", ledger, output, overwrite)
        advance_until_complete(ledger, provider, handle, timeout_s)
        return runner.finish(ledger, handle, output, overwrite)
    finally:
        ledger.close()


def advance_until_complete(
    ledger: Ledger, provider: XaiProvider, handle: runner.RunHandle, timeout_s: float = 60.0
) -> None:
    """Advance a run until every row has its outcome; fails the test past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not runner.advance(ledger, provider, handle).complete:
        assert time.monotonic() < deadline, "run did not finish in time"
        time.sleep(0.05)


def request_bodies(run_dir: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> request body, from every shard the run wrote."""
    bodies = {}
    for shard in sorted((run_dir / "requests").glob("*.jsonl")):
        for line in shard.read_text(encoding="utf-8").split("\n")[:-1]:
            item = json.loads(line)
            bodies[item["custom_id"]] = item["body"]
    return bodies


def assert_answers_on_their_rows(output: Path, run_dir: Path) -> None:
    """Every succeeded row carries exactly the answer the emulator gives its own request."""
    bodies = request_bodies(run_dir)
    for row in pq.read_table(output).to_pylist():
        if row["status"] == "succeeded":
            assert row["response"] == expected_answer(bodies[row["custom_id"]]), row["custom_id"]


def run_cli(args: list[str], api_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`grok-batch ARGS` in a fresh process (so GROK_BATCH_CRASH_AT can SIGKILL it), talking
    to the test Prefect server; provider variables come only from `env`."""
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("XAI_", "OPENAI_"))},
        "PREFECT_API_URL": api_url,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
