"""End to end through a real `prefect server start` and served deployments: an analyst drops
a file, the scheduled scan and collector finish it against the emulator, and no flow run
waits for the batch inside a worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tests.helpers import EMULATOR_KEY, stop, write_csv

pytestmark = pytest.mark.slow
INTERVAL_S = 8  # short passes on 2 cores: shorter intervals make the machine, not the code, the limit


async def _runs_and_artifacts(api_url: str) -> tuple[list, list]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url) as client:
        return await client.read_flow_runs(limit=200), await client.read_artifacts(limit=200)


def test_dropped_file_is_finished_by_the_scheduled_scan_and_collector(
    tmp_path: Path, prefect_server: dict[str, str], emulator: RunningEmulator
) -> None:
    emulator.configure(processing_s=3.0)  # longer than a flow run, so the collector must come back
    data = tmp_path / "data"
    env = {
        **os.environ,
        **prefect_server,
        "XAI_BASE_URL": emulator.url,
        "XAI_API_KEY": EMULATOR_KEY,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    served = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--data-dir",
            str(data),
            "--scan-interval",
            str(INTERVAL_S),
            "--collect-interval",
            str(INTERVAL_S),
            "--settle",
            "1",
        ],
        env=env,
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        inbox = data / "inbox"
        inbox.mkdir(parents=True)
        (inbox / "default.job.yaml").write_text(
            "name: inbox-e2e\nmodel: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
        )
        write_csv(inbox / "reviews.csv", [{"text": f"great product {i}"} for i in range(25)])
        output = data / "outbox" / "reviews.parquet"
        deadline = time.monotonic() + 180
        while not output.exists():
            assert served.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(1)  # let the collector's flow run report its end state
    finally:
        stop(served)

    table = pq.read_table(output)
    assert table.num_rows == 25 and set(table.column("status").to_pylist()) == {"succeeded"}
    assert "| succeeded | 25 |" in (data / "outbox" / "reviews.report.md").read_text()
    assert any(p.name.startswith("reviews--") for p in (data / "archive").iterdir())
    assert list(inbox.glob("reviews*")) == []
    assert emulator.state.count("POST", "/v1/batches", 200) == 1

    deadline = time.monotonic() + 30  # the last runs report their end state through the API
    while True:
        runs, artifacts = asyncio.run(_runs_and_artifacts(prefect_server["PREFECT_API_URL"]))
        finished = [r for r in runs if r.state is not None and r.state.is_completed()]
        names = {r.flow_id for r in finished}
        if len(names) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    seen = sorted((r.name, r.state.name if r.state else None) for r in runs)
    assert len(names) >= 2, seen  # both scan-inbox and collect-pending ran as deployments
    assert all(r.deployment_id is not None for r in finished)
    longest = max(r.total_run_time.total_seconds() for r in finished)
    assert longest < 3 * INTERVAL_S, f"a flow run lasted {longest:.1f}s: something waited in a worker"
    kinds = {(a.type, (a.key or "").split("-")[2] if a.key else "") for a in artifacts}
    assert (
        ("table", "summary") in kinds
        and ("markdown", "report") in kinds
        and ("progress", "progress") in kinds
    )
