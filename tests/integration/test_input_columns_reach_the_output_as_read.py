"""The output carries every input column as it was read: a CSV's cells as the text written
(no guessed types: "007" stays "007", an empty cell is ""), a Parquet file's columns in their
own types."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emulator import RunningEmulator
from tasks.spec.job import build_job
from tests.helpers import assert_answers_on_their_rows, run_to_end

JOB = {"model": "grok-4.3", "prompt": "{{ text }} in {{ zip }}", "id_column": "id"}


def test_csv_cells_reach_the_output_as_written(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,zip,empty,text\n007,01234,,first\n7,1234,,second\n")
    summary, _ = run_to_end(src, build_job(None, JOB), data_dir, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == ["007", "7"]
    assert table.column("zip").to_pylist() == ["01234", "1234"]
    assert table.column("empty").type == pa.string() and table.column("empty").to_pylist() == ["", ""]
    assert summary.by_status["succeeded"] == 2
    assert_answers_on_their_rows(tmp_path / "out.parquet", data_dir / "runs" / summary.run_key)


def test_parquet_columns_reach_the_output_in_their_types(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = tmp_path / "in.parquet"
    table = pa.table({"id": [7, 8], "zip": ["01234", "1234"], "score": [0.5, None], "text": ["a", "b"]})
    pq.write_table(table, src)
    summary, _ = run_to_end(src, build_job(None, JOB), data_dir, tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.select(table.column_names) == table
    assert summary.by_status["succeeded"] == 2
