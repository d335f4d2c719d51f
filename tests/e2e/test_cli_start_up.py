"""How a command-line run relates to Prefect: with no Prefect server configured the same
stages run in the process and no server is started; every input error comes before Prefect
is touched; with PREFECT_API_URL set the run is a flow run on that server, artifacts and all."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tests.helpers import EMULATOR_KEY, free_port, run_cli, write_csv

pytestmark = pytest.mark.slow
ROWS = [{"text": "I love it"}, {"text": "broken"}]


def _no_server_env(home: Path) -> dict[str, str]:
    """A process with no Prefect server configured anywhere: an empty PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XAI_", "OPENAI_", "PREFECT_"))}
    return {**env, "PREFECT_HOME": str(home)}


def test_a_run_without_a_prefect_server_starts_none_and_answers_every_row(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    home = tmp_path / "prefect-home"
    src = write_csv(tmp_path / "in.csv", ROWS)
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "--model", "grok-4.3", "--prompt", "Classify: {{ text }}", "-o", str(out)]
    args += ["--data-dir", str(tmp_path / "d"), "--poll-interval", "0.1"]
    env = {**_no_server_env(home), "XAI_BASE_URL": emulator.url, "XAI_API_KEY": EMULATOR_KEY}
    done = run_cli(args, api_url="", **env)  # PREFECT_API_URL set but empty: no server either
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert pq.read_table(out).column("status").to_pylist() == ["succeeded", "succeeded"]
    # Prefect's temporary server keeps its database in PREFECT_HOME: none was started.
    assert not (home / "prefect.db").exists(), sorted(p.name for p in home.iterdir())
    assert emulator.state.count("POST", "/v1/batches", 200) == 1


def test_input_errors_come_before_prefect_or_the_service_is_touched(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    # A Prefect server that is not there: an error that waited for Prefect would be about it.
    dead = f"http://127.0.0.1:{free_port()}/api"
    src = write_csv(tmp_path / "in.csv", ROWS)
    taken = write_csv(tmp_path / "taken.parquet", ROWS)
    base = ["--model", "grok-4.3", "--prompt", "Classify: {{ text }}", "--data-dir", str(tmp_path / "d")]
    key = {"XAI_BASE_URL": emulator.url, "XAI_API_KEY": EMULATOR_KEY, "PREFECT_HOME": str(tmp_path / "h")}
    cases = [
        (["run", str(tmp_path / "missing.csv"), *base], key, "does not exist"),
        (["run", str(src), *base, "-o", str(taken)], key, "already exists"),
        (["run", str(src), *base, "-o", str(tmp_path / "o.parquet")], {"PREFECT_HOME": key["PREFECT_HOME"]},
         "no API key"),
        (["run", str(src), "--model", "grok-4.3", "--data-dir", str(tmp_path / "d")], key, "field `prompt`"),
    ]  # fmt: skip
    for args, env, expected in cases:
        done = run_cli(args, api_url=dead, **env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr + done.stdout, (args, done.stderr)
        assert "Traceback" not in done.stderr and "requests" not in done.stdout  # no progress bar
    assert emulator.state.request_log == []


def test_with_a_prefect_server_a_cli_run_is_a_flow_run_with_its_artifacts(
    tmp_path: Path, prefect_server: dict[str, str], emulator: RunningEmulator
) -> None:
    src = write_csv(tmp_path / "in.csv", ROWS)
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "--model", "grok-4.3", "--prompt", "Classify: {{ text }}", "--name", "seen"]
    args += ["-o", str(out), "--data-dir", str(tmp_path / "d"), "--poll-interval", "0.1"]
    env = {
        "XAI_BASE_URL": emulator.url,
        "XAI_API_KEY": EMULATOR_KEY,
        "PREFECT_HOME": prefect_server["PREFECT_HOME"],
    }
    done = run_cli(args, api_url=prefect_server["PREFECT_API_URL"], **env)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out).column("status").to_pylist() == ["succeeded", "succeeded"]

    async def runs_and_artifacts() -> tuple[list, list]:
        from prefect.client.orchestration import PrefectClient

        async with PrefectClient(prefect_server["PREFECT_API_URL"]) as client:
            return await client.read_flow_runs(limit=20), await client.read_artifacts(limit=50)

    runs, artifacts = asyncio.run(runs_and_artifacts())
    (run,) = [r for r in runs if r.name == "seen · in.csv"]
    assert run.state is not None and run.state.is_completed()
    mine = {a.type for a in artifacts if a.flow_run_id == run.id}
    assert {"table", "markdown", "progress"} <= mine
