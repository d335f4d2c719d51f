"""Test helpers: write tables, drive a run with the plain stage functions, recompute answers."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from emulator.completions import expected_answer
from tasks import runner, start
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.providers.base import BatchProvider
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec
from tasks.stages.report import RunSummary

EMULATOR_KEY = "test-key-8c1f0d2e9a7b"  # what the test emulators accept


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_to_end(
    input_path: Path,
    job: JobSpec,
    data_dir: Path,
    output: Path,
    *,
    timeout_s: float = 60.0,
    overwrite: bool = False,
    on_start: Callable[[Ledger, runner.RunHandle], None] | None = None,
    on_progress: Callable[[runner.Progress], None] | None = None,
) -> tuple[RunSummary, runner.RunHandle]:
    """Run the pipeline with the plain functions (no Prefect) and the provider the job
    names, bounded in time."""
    ledger = Ledger(default_ledger_url(data_dir))
    try:
        provider = make_provider(job.provider, job.base_url)
        handle = start.start_run(TableSource(input_path), job, data_dir / "runs", ledger, output, overwrite)
        if on_start is not None:
            on_start(ledger, handle)
        advance_until_complete(ledger, provider, handle, timeout_s, on_progress)
        return runner.finish(ledger, handle, output, overwrite), handle
    finally:
        ledger.close()


def advance_until_complete(
    ledger: Ledger,
    provider: BatchProvider,
    handle: runner.RunHandle,
    timeout_s: float = 60.0,
    on_progress: Callable[[runner.Progress], None] | None = None,
) -> None:
    """Advance a run until every row has its outcome; fails the test past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (progress := runner.advance(ledger, provider, handle)).complete:
        if on_progress is not None:
            on_progress(progress)
        assert time.monotonic() < deadline, f"run did not finish in {timeout_s} s: {progress}"
        time.sleep(0.05)  # batch mode: give the batches time; sync passes do their own work


def review_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i}", "text": f"review {i}: {'great' if i % 3 else 'broken'} thing"} for i in range(count)
    ]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
