"""The whole pipeline with the plain stage functions against the emulator over HTTP."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks.infra.errors import GrokBatchError
from tasks.spec.job import build_job
from tests.helpers import advance_until_complete, assert_answers_on_their_rows, run_to_end, write_csv

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}


def test_every_row_gets_its_own_answer_in_input_order(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    rows = [
        {"id": f"k{i}", "text": f"review number {i} {'great' if i % 3 else 'broken'}", "n": i}
        for i in range(120)
    ]
    rows[7]["text"] = ""
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "prompt": "{{ text }}", "id_column": "id", "shard_max_lines": 50})
    summary = run_to_end(src, job, data_dir, out)[0]
    table = pq.read_table(out)
    assert table.column_names[:3] == ["id", "text", "n"]
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert table.column("n").type == pa.string()  # a CSV's cells come back as written: text
    assert table.column("n").to_pylist() == [str(r["n"]) for r in rows]
    assert summary.by_status["succeeded"] == 119 and summary.by_status["rejected"] == 1
    assert table.column("status").to_pylist()[7] == "rejected"
    assert table.column("attempts").to_pylist()[7] == 0
    assert_answers_on_their_rows(out, data_dir / "runs" / summary.run_key)
    assert len(summary.batches) == 3
    assert emulator.state.count("POST", "/v1/batches", 200) == 3
    assert emulator.state.files == {}  # uploaded request files are deleted once collected


def test_failed_requests_are_retried_in_follow_up_rounds(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.config.fail_rate = 0.4
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(100)])
    out = tmp_path / "out.parquet"
    summary = run_to_end(src, build_job(None, {**JOB, "max_attempts": 3}), data_dir, out)[0]
    table = pq.read_table(out).to_pylist()
    assert summary.rounds == 3
    attempts = [r["attempts"] for r in table]
    assert set(attempts) == {1, 2, 3}
    for row in table:  # a row is retried only after it failed
        assert row["status"] == "succeeded" or (row["status"] == "failed" and row["attempts"] == 3)
    assert summary.by_status["succeeded"] > 90
    assert_answers_on_their_rows(out, data_dir / "runs" / summary.run_key)


def test_rejected_file_fails_its_rows_with_the_service_message(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    # The catalog says grok-4-fast-reasoning takes batches; this service has stopped taking it.
    emulator.configure(batch_models=["grok-4.3"])
    src = write_csv(tmp_path / "in.csv", [{"text": "a"}, {"text": "b"}])
    out = tmp_path / "out.parquet"
    summary = run_to_end(src, build_job(None, {**JOB, "model": "grok-4-fast-reasoning"}), data_dir, out)[0]
    assert summary.by_status["failed"] == 2 and summary.rounds == 1  # not retried: it would fail again
    assert "Model grok-4-fast-reasoning is not supported for batch processing." in summary.rejected_files[0]
    errors = pq.read_table(out).column("error").to_pylist()
    assert all("rejected the whole file" in e and "grok-4-fast-reasoning" in e for e in errors)


def test_model_known_to_be_refused_is_stopped_before_upload(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "a"}])
    with pytest.raises(
        GrokBatchError, match=r"field `model`: grok-4.5 is not accepted by the xAI batch endpoint"
    ):
        run_to_end(src, build_job(None, {**JOB, "model": "grok-4.5"}), data_dir, tmp_path / "out.parquet")[0]
    assert emulator.state.request_log == []


def test_output_is_never_overwritten_without_permission(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "a"}])
    out = tmp_path / "out.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(GrokBatchError, match="already exists"):
        run_to_end(src, build_job(None, JOB), data_dir, out)[0]
    assert out.read_bytes() == b"precious"
    assert emulator.state.request_log == []  # refused before anything was uploaded
    run_to_end(src, build_job(None, JOB), data_dir, out, overwrite=True)[0]
    assert pq.read_table(out).num_rows == 1


def test_input_changed_during_the_run_is_refused_at_join(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    from tasks import runner, start
    from tasks.infra.ledger import Ledger, default_ledger_url
    from tasks.infra.table_io import TableSource
    from tasks.providers.xai import XaiProvider

    src = write_csv(tmp_path / "in.csv", [{"text": "a"}, {"text": "b"}])
    out = tmp_path / "out.parquet"
    ledger = Ledger(default_ledger_url(data_dir))
    handle = start.start_run(TableSource(src), build_job(None, JOB), data_dir / "runs", ledger, out)
    advance_until_complete(ledger, XaiProvider(), handle)
    write_csv(src, [{"text": "b"}, {"text": "a"}])  # same rows, other order
    with pytest.raises(GrokBatchError, match=r"in.csv changed since the run prepared it"):
        runner.finish(ledger, handle, out, overwrite=False)
    assert not out.exists()
    ledger.close()


def test_latin1_input_runs_to_the_end_with_its_encoding(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    from tasks import runner, start
    from tasks.infra.ledger import Ledger, default_ledger_url
    from tasks.infra.table_io import TableSource
    from tasks.providers.xai import XaiProvider

    src = tmp_path / "latin.csv"
    src.write_bytes("id,text\n1,café crème\n2,naïve\n".encode("latin-1"))
    out = tmp_path / "out.parquet"
    ledger = Ledger(default_ledger_url(data_dir))
    handle = start.start_run(
        TableSource(src, encoding="latin-1"), build_job(None, JOB), data_dir / "runs", ledger, out
    )
    advance_until_complete(ledger, XaiProvider(), handle)
    runner.finish(ledger, handle, out, overwrite=False)
    ledger.close()
    assert pq.read_table(out).column("text").to_pylist() == ["café crème", "naïve"]
