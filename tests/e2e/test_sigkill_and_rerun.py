"""Fault injection through the real CLI in a subprocess: SIGKILL at every stage boundary,
then the same command again. The emulator's own log proves nothing was paid twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emulator import EmulatorConfig, RunningEmulator
from tasks.infra import crashpoints
from tasks.infra.ledger import Ledger, default_ledger_url
from tests.helpers import EMULATOR_KEY, assert_answers_on_their_rows, run_cli, write_csv

pytestmark = pytest.mark.slow
ROWS = 30
SHARD_LINES = 10  # three shards, three batches


def cli(
    args: list[str], emulator: RunningEmulator, api_url: str, key: str = EMULATOR_KEY, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(args, api_url, XAI_BASE_URL=emulator.url, XAI_API_KEY=key, **env)


def run_args(src: Path, out: Path, data_dir: Path) -> list[str]:
    return [
        "run", str(src), "--model", "grok-4.3", "--prompt", "Classify: {{ text }}",
        "--id-column", "id", "-o", str(out), "--data-dir", str(data_dir), "--poll-interval", "0.2",
    ]  # fmt: skip


def make_input(tmp_path: Path) -> Path:
    rows = [{"id": f"row-{i}", "text": f"review {i}: {'great' if i % 2 else 'broken'}"} for i in range(ROWS)]
    return write_csv(tmp_path / "in.csv", rows)


def shard_count_override(tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(f"shard_max_lines: {SHARD_LINES}\n")
    return job


@pytest.mark.parametrize(
    "point",
    [
        crashpoints.AFTER_UPLOAD,
        crashpoints.AFTER_CREATE,
        crashpoints.WHILE_POLLING,
        crashpoints.WHILE_COLLECTING,
        crashpoints.WHILE_JOINING,
    ],
)
def test_sigkill_then_rerun_finishes_without_paying_twice(
    tmp_path: Path, slow_emulator: RunningEmulator, prefect_api_url: str, point: str
) -> None:
    src, out, data_dir = make_input(tmp_path), tmp_path / "out.parquet", tmp_path / "data"
    args = [*run_args(src, out, data_dir), "--job", str(shard_count_override(tmp_path))]
    # The crash points are in the stages that both ways of running share: one point goes through
    # a flow on the Prefect server, the others through the in-process stages (no server).
    api_url = prefect_api_url if point == crashpoints.AFTER_CREATE else ""
    crashed = cli(args, slow_emulator, api_url, GROK_BATCH_CRASH_AT=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert not out.exists()
    rerun = cli(args, slow_emulator, api_url)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"row-{i}" for i in range(ROWS)]
    assert set(table.column("status").to_pylist()) == {"succeeded"}
    assert slow_emulator.state.count("POST", "/v1/batches", 200) == ROWS // SHARD_LINES
    assert slow_emulator.state.count("POST", "/v1/files", 200) == ROWS // SHARD_LINES
    run_dir = next((data_dir / "runs").iterdir())
    assert_answers_on_their_rows(out, run_dir)


def test_two_processes_on_one_run_never_both_submit(
    tmp_path: Path, slow_emulator: RunningEmulator, prefect_api_url: str
) -> None:
    slow_emulator.configure(processing_s=8.0)  # the first process is still waiting when the second starts
    src, out, data_dir = make_input(tmp_path), tmp_path / "out.parquet", tmp_path / "data"
    args = [*run_args(src, out, data_dir), "--job", str(shard_count_override(tmp_path))]
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api_url,
        "XAI_BASE_URL": slow_emulator.url,
        "XAI_API_KEY": EMULATOR_KEY,
    }
    first = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while slow_emulator.state.count("POST", "/v1/batches", 200) == 0:  # first is at work
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        second = cli(args, slow_emulator, prefect_api_url)
        assert second.returncode == 2
        assert "is being worked on by" in second.stderr
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert slow_emulator.state.count("POST", "/v1/batches", 200) == ROWS // SHARD_LINES
    assert pq.read_table(out).num_rows == ROWS


def test_api_key_never_leaks(tmp_path: Path, prefect_api_url: str) -> None:
    secret = "xai-SECRET-5f1e9c7d3b2a"
    config = EmulatorConfig(api_key=secret, parse_delay_s=0.05, processing_s=0.2)
    with RunningEmulator(config) as server:
        src, out, data_dir = make_input(tmp_path), tmp_path / "out.parquet", tmp_path / "data"
        ok = cli(
            [*run_args(src, out, data_dir), "--job", str(shard_count_override(tmp_path))],
            server,
            prefect_api_url,
            key=secret,
            PREFECT_LOGGING_LEVEL="DEBUG",
        )
        assert ok.returncode == 0, ok.stderr[-2000:]
        bad = cli(
            run_args(src, tmp_path / "other.parquet", tmp_path / "d2"),
            server,
            prefect_api_url,
            key="xai-WRONG-0a9b8c7d",
        )
    assert bad.returncode == 2 and "HTTP 401" in bad.stderr
    assert "xai-WRONG-0a9b8c7d" not in bad.stdout + bad.stderr
    assert secret not in ok.stdout + ok.stderr
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    ledger = Ledger(default_ledger_url(data_dir))
    assert ledger.open_runs() == []
    ledger.close()
    import asyncio

    from prefect.client.orchestration import get_client

    async def server_side_text() -> str:
        async with get_client() as client:
            logs = await client.read_logs(limit=200)
            artifacts = await client.read_artifacts(limit=200)
            runs = await client.read_flow_runs(limit=200)
        return repr(logs) + repr(artifacts) + repr([r.parameters for r in runs])

    assert secret not in asyncio.run(server_side_text())
