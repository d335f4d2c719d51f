"""What grok-batch says about a run is true after every command, failed ones included: a run
is its input, job and the server that answers; a refused command leaves the ledger as it
was; reports and status name the file given this time; status is live; cancel is honest."""

from __future__ import annotations

import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from emulator import EmulatorConfig, RunningEmulator
from flows.run_job import local_wait, run_batch_job
from flows.scan_inbox import scan_inbox
from tasks.doors.control import cancel_run, run_status
from tasks.doors.drive import WaitPolicy
from tasks.infra.errors import GrokBatchError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.spec.job import build_job
from tasks.start import dry_run
from tests.helpers import EMULATOR_KEY, write_csv
from tests.integration.test_inbox import collect_until_idle

pytestmark = pytest.mark.usefixtures("prefect_harness")
JOB = {"name": "record", "model": "grok-4.3", "prompt": "Classify: {{ text }}", "max_attempts": 1}


def _run(src: Path, out: Path, data: Path, *, wait: bool = True, **job: Any) -> dict[str, Any]:
    with local_wait(WaitPolicy(wait, poll_interval_s=0.05)):
        return run_batch_job(
            input_path=str(src), job=build_job(None, {**JOB, **job}), output=str(out), data_dir=str(data)
        )


def _ledger(data: Path) -> closing[Ledger]:
    return closing(Ledger(default_ledger_url(data)))


def _dump(data: Path) -> list[str]:
    """Every table of the ledger, row by row."""
    with closing(sqlite3.connect(data / "ledger.sqlite")) as conn:
        return list(conn.iterdump())


def test_another_server_is_another_run_with_its_own_answers(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_csv(tmp_path / "reviews.csv", [{"text": f"thing {i}"} for i in range(6)])
    first = _run(src, tmp_path / "first.parquet", data_dir)
    # The same file and job against a second server, which fails every request: its own
    # batch and its own answers, never the first server's (the demo, then the real service).
    failing = EmulatorConfig(api_key=EMULATOR_KEY, parse_delay_s=0.05, processing_s=0.2, fail_rate=1.0)
    with RunningEmulator(failing) as other:
        monkeypatch.setenv("XAI_BASE_URL", other.url)
        second = _run(src, tmp_path / "second.parquet", data_dir)
        assert other.state.count("POST", "/v1/batches", 200) == 1
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert first["run_key"] != second["run_key"]
    assert set(pq.read_table(tmp_path / "first.parquet").column("status").to_pylist()) == {"succeeded"}
    assert set(pq.read_table(tmp_path / "second.parquet").column("status").to_pylist()) == {"failed"}


def test_a_refused_command_leaves_the_ledger_as_it_was(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_csv(tmp_path / "reviews.csv", [{"text": f"thing {i}"} for i in range(6)])
    finished = _run(src, tmp_path / "out.parquet", data_dir)["run_key"]
    fresh = write_csv(tmp_path / "fresh.csv", [{"text": f"new {i}"} for i in range(6)])
    before = _dump(data_dir)

    def refused(command: Any, match: str) -> None:
        with pytest.raises(GrokBatchError, match=match):
            command()
        assert _dump(data_dir) == before, "a refused command changed the ledger"

    with monkeypatch.context() as no_key:
        no_key.delenv("XAI_API_KEY")
        refused(lambda: _run(src, tmp_path / "other.parquet", data_dir), "no API key")
        refused(lambda: _run(fresh, tmp_path / "fresh.parquet", data_dir), "no API key")
    refused(lambda: _run(src, tmp_path / "out.parquet", data_dir), "already exists")
    refused(lambda: _run(src, tmp_path / "out.csv", data_dir), "must end in .parquet")
    refused(lambda: _run(fresh, tmp_path / "f.parquet", data_dir, max_cost_usd=1e-9), "budget|max_cost_usd")
    with _ledger(data_dir) as ledger:
        ledger.claim(finished, "elsewhere:1", 60)  # another driver holds the finished run
        before = _dump(data_dir)
        refused(lambda: _run(src, tmp_path / "again.parquet", data_dir), "being worked on by elsewhere:1")
        ledger.release(finished, "elsewhere:1")
        run = ledger.run(finished)
    assert run is not None and run["output_path"] == str(tmp_path / "out.parquet")  # not other.parquet
    assert emulator.state.count("POST", "/v1/files", 200) == 1  # nothing was uploaded by the refused ones


def test_inbox_reports_and_status_name_the_file_dropped(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    rows = [{"text": f"same {i}"} for i in range(4)]
    elsewhere = write_csv(tmp_path / "reviews.csv", rows)
    job = build_job(None, JOB)
    dry_run(TableSource(elsewhere), job, data_dir / "runs")  # an estimate prepares the same run
    inbox = data_dir / "inbox"
    inbox.mkdir()
    shutil.copy(elsewhere, inbox / "feedback.csv")
    (inbox / "feedback.job.yaml").write_text(
        "name: record\nmodel: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
    )
    assert scan_inbox(data_dir=str(data_dir), settle_s=0)["submitted"] == ["feedback.csv"]
    collect_until_idle(data_dir)
    report = (data_dir / "outbox" / "feedback.report.md").read_text()
    assert "feedback--" in report and str(elsewhere) not in report
    with _ledger(data_dir) as ledger:
        (run,) = run_status(ledger, None).runs
    archived = Path(run["input_path"])
    assert archived.parent == (data_dir / "archive").resolve() and archived.exists()
    assert archived.name.startswith("feedback--")


def test_status_is_live_and_cancel_says_what_it_did(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.config.processing_s = 1.5
    src = write_csv(tmp_path / "reviews.csv", [{"text": f"thing {i}"} for i in range(8)])
    key = _run(src, tmp_path / "out.parquet", data_dir, wait=False)["run_key"]
    with _ledger(data_dir) as ledger:
        ledger.claim(key, "elsewhere:1", 60)  # a driver holds it: status says so and how old its figures are
        busy = run_status(ledger, key).detail
        assert busy is not None and "elsewhere:1 is driving the run" in busy.freshness, busy.freshness
        assert "ledger figures from" in busy.freshness
        ledger.release(key, "elsewhere:1")
        assert ledger.batches(key)[0].finished == 0  # the ledger's last word: nothing finished
        for _ in range(100):  # the service finishes on its own clock; status asks it
            detail = run_status(ledger, key[:6]).detail
            assert detail is not None and detail.freshness.startswith("live"), detail.freshness
            if detail.batches[0].finished == 8:
                break
            time.sleep(0.05)
        assert detail.batches[0].finished == 8 and not detail.output_exists
        assert ledger.batches(key)[0].finished == 8  # and the ledger now knows it too
        first = cancel_run(ledger, key)
        second = cancel_run(ledger, key)
        assert not first.already_requested and second.already_requested
        assert run_status(ledger, key).detail.as_dict()["cancel_requested"] is True


def test_cancel_of_a_finished_run_makes_no_call(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = write_csv(tmp_path / "reviews.csv", [{"text": f"thing {i}"} for i in range(3)])
    key = _run(src, tmp_path / "out.parquet", data_dir)["run_key"]
    calls = len(emulator.state.request_log)
    with _ledger(data_dir) as ledger:
        outcome = cancel_run(ledger, key)
        assert outcome.nothing_to_cancel and outcome.state == "finished"
        assert not ledger.run(key)["cancel_requested"]
    assert len(emulator.state.request_log) == calls
