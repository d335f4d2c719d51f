"""What a run stored at the service (its uploaded request files; with OpenAI's protocol also
each batch's output and error file) is deleted once collected, and counted in the report;
`keep_service_files: true` keeps it all. Counted at the emulator's own file store, over HTTP."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks import runner
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.spec.job import JobSpec, build_job
from tasks.stages.report import RunSummary
from tests.helpers import review_rows, run_to_end, write_csv

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}", "id_column": "id", "shard_max_lines": 10}


def job(**fields: object) -> JobSpec:
    return build_job(None, {**JOB, **fields})


def run(tmp_path: Path, spec: JobSpec, rows: int = 25) -> tuple[RunSummary, runner.RunHandle]:
    src = write_csv(tmp_path / "in.csv", review_rows(rows))
    return run_to_end(src, spec, tmp_path / "data", tmp_path / "out.parquet")


def stored(server: RunningEmulator) -> set[str]:
    with server.state.lock:
        return set(server.state.files)


def xai_inputs(server: RunningEmulator) -> set[str]:
    with server.state.lock:
        return {b.input_file_id for b in server.state.batches.values() if b.input_file_id}


def openai_files(server: RunningEmulator) -> tuple[set[str], set[str], set[str]]:
    """(request, output, error) file ids of every OpenAI batch the emulator ran."""
    with server.state.lock:
        batches = list(server.state.openai.batches.values())
    return (
        {b.input_file_id for b in batches},
        {b.output_file_id for b in batches if b.output_file_id},
        {b.error_file_id for b in batches if b.error_file_id},
    )


def report_text(tmp_path: Path) -> str:
    return runner.report_path(tmp_path / "out.parquet").read_text(encoding="utf-8")


def test_xai_request_files_are_deleted_once_collected_and_counted(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    summary, _ = run(tmp_path, job())
    assert summary.by_status["succeeded"] == 25 and len(summary.batches) == 3
    assert len(xai_inputs(emulator)) == 3  # one upload per shard...
    assert stored(emulator) == set()  # ...and none left
    assert emulator.state.count("DELETE", "/v1/files/" + next(iter(xai_inputs(emulator))), 200) == 1
    assert summary.service_files_deleted == 3
    assert "- files deleted at the service once collected: 3\n" in report_text(tmp_path)


def test_openai_request_output_and_error_files_are_all_deleted_once_collected(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    openai_emulator.configure(fail_rate=0.3)  # some rows fail: error files as well as output files
    summary, _ = run(tmp_path, job(provider="openai", max_attempts=1))
    inputs, outputs, errors = openai_files(openai_emulator)
    assert len(inputs) == 3 and len(outputs) == 3 and errors, (inputs, outputs, errors)
    assert stored(openai_emulator) == set()  # nothing of the run is stored at the service any more
    every = inputs | outputs | errors
    assert summary.service_files_deleted == len(every)
    assert f"- files deleted at the service once collected: {len(every)}\n" in report_text(tmp_path)
    # the rows were collected from those files before they went
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"succeeded", "failed"} and len(rows) == 25


@pytest.mark.parametrize("protocol", ["xai", "openai"])
def test_keep_service_files_keeps_everything_the_run_stored(
    tmp_path: Path, openai_emulator: RunningEmulator, protocol: str
) -> None:
    summary, _ = run(tmp_path, job(provider=protocol, keep_service_files=True))
    assert summary.by_status["succeeded"] == 25
    if protocol == "xai":
        expected = xai_inputs(openai_emulator)
        assert len(expected) == 3
    else:
        inputs, outputs, errors = openai_files(openai_emulator)
        assert len(inputs) == len(outputs) == 3 and errors == set()
        expected = inputs | outputs
    assert stored(openai_emulator) == expected
    assert all(entry.method != "DELETE" for entry in openai_emulator.state.request_log)
    assert summary.service_files_kept and summary.service_files_deleted == 0
    text = report_text(tmp_path)
    assert "- files at the service: kept (`keep_service_files: true`)\n" in text
    assert "files deleted" not in text


def test_the_count_is_read_from_what_collection_recorded_so_a_later_join_says_the_same(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    summary, handle = run(tmp_path, job(provider="openai"))
    assert summary.service_files_deleted == 6  # 3 request files, 3 output files, no errors
    # Another process joins the same run again (nothing held in memory): the same count.
    ledger = Ledger(default_ledger_url(tmp_path / "data"))
    try:
        again = runner.finish(
            ledger, runner.handle_for(ledger, handle.run_key), tmp_path / "again.parquet", overwrite=False
        )
    finally:
        ledger.close()
    assert again.service_files_deleted == 6
    assert stored(openai_emulator) == set()
