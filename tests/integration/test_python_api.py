"""`import grok_batch` for notebooks: a DataFrame in, the same DataFrame back with its answers;
the same call twice pays once; a run submitted without waiting is picked up by another process."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pyarrow as pa

import grok_batch
from emulator import RunningEmulator
from tasks.infra.ledger import Ledger, default_ledger_url
from tests.helpers import EMULATOR_KEY, assert_answers_on_their_rows, request_bodies

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}


def test_a_dataframe_comes_back_aligned_to_its_index_and_a_second_call_pays_nothing(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    df = pd.DataFrame(
        {"text": ["I love it", "broken", None, "Très bien 😀 « ok »", "line\nbreak"], "n": [1, 2, 3, 4, 5]},
        index=["a", "a", "b", "c", "a"],  # duplicated labels: alignment is by position
    )
    out = grok_batch.run(df, data_dir=tmp_path, progress=False, **JOB)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == list(df.index)
    assert out["text"].tolist()[:2] == ["I love it", "broken"] and out["n"].tolist() == [1, 2, 3, 4, 5]
    assert out["status"].tolist() == ["succeeded"] * 5
    with closing(Ledger(default_ledger_url(tmp_path))) as ledger:
        (recorded,) = ledger.find_runs("")
    assert_answers_on_their_rows(Path(recorded["output_path"]), Path(recorded["run_dir"]))

    again = grok_batch.run(df, data_dir=tmp_path, progress=False, **JOB)
    pd.testing.assert_frame_equal(again, out)
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert emulator.state.count("POST", "/v1/files", 200) == 1


def test_an_arrow_table_and_a_job_dict_with_keyword_overrides(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    table = pa.table({"text": ["good", "bad"]})
    out = grok_batch.run(
        table, {"model": "grok-4.3", "prompt": "ignored {{ text }}"}, prompt=JOB["prompt"], data_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    assert out["text"].tolist() == ["good", "bad"] and out["status"].tolist() == ["succeeded"] * 2
    with closing(Ledger(default_ledger_url(tmp_path))) as ledger:
        (recorded,) = ledger.find_runs("")
    assert_answers_on_their_rows(Path(recorded["output_path"]), Path(recorded["run_dir"]))
    bodies = request_bodies(Path(recorded["run_dir"]))
    assert {b["messages"][-1]["content"] for b in bodies.values()} == {"Classify: good", "Classify: bad"}


def test_an_estimate_sends_nothing(tmp_path: Path, emulator: RunningEmulator) -> None:
    df = pd.DataFrame({"text": [f"review {i}" for i in range(30)]})
    estimate = grok_batch.estimate(df, data_dir=tmp_path, **JOB)
    assert (estimate.rows, estimate.to_send, estimate.mode) == (30, 30, "batch")
    assert estimate.batch_usd is not None and estimate.batch_usd > 0
    assert emulator.state.request_log == []


def test_a_run_submitted_without_waiting_is_finished_by_another_process(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    emulator.configure(processing_s=2.0)  # still running when this process lets go of it
    df = pd.DataFrame({"text": [f"thing {i}" for i in range(8)]})
    run = grok_batch.run(df, data_dir=tmp_path, wait=False, progress=False, **JOB)
    assert isinstance(run, grok_batch.Run)
    assert run.status()["state"] == "open"
    script = (
        "import sys, grok_batch\n"
        "out = grok_batch.Run.attach(sys.argv[1][:10], data_dir=sys.argv[2]).result()\n"
        "print(','.join(out['status']))\n"
    )
    env = {**os.environ, "XAI_BASE_URL": emulator.url, "XAI_API_KEY": EMULATOR_KEY}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", script, run.run_key, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == ",".join(["succeeded"] * 8)
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert run.status(refresh=False)["state"] == "finished"
    assert run.cancel() is False  # finished: nothing to cancel
