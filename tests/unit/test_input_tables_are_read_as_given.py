"""A CSV's cells are text exactly as written: no type is guessed, so "007" stays "007", a zip
"01234" keeps its zero and an empty cell is "" (never null)."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.infra.errors import InputError
from tasks.infra.run_layout import RunPaths, load_schema
from tasks.infra.table_io import TableSource
from tasks.spec.job import build_job
from tasks.stages.prepare import prepare_run

JOB = {"model": "grok-4.3", "prompt": "{{ zip }}|{{ note }}|{{ text }}", "id_column": "id"}
CSV = b'id,zip,note,text\n007,01234,,first\n7,1234,"",second\n0.50,00000,,third\n'


def prompts_and_ids(plan) -> list[tuple[str, str]]:
    out = []
    for shard in plan.shards:
        for line in Path(shard.path).read_text(encoding="utf-8").split("\n")[:-1]:
            item = json.loads(line)
            out.append((item["custom_id"], item["body"]["messages"][-1]["content"]))
    return out


def test_csv_cells_reach_the_prompt_as_written(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(CSV)
    plan = prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "runs")  # "007" and "7" differ
    sent = prompts_and_ids(plan)
    assert [prompt for _, prompt in sent] == ["01234||first", "1234||second", "00000||third"]
    assert [custom_id.split("-", 1)[1] for custom_id, _ in sent] == ["007", "7", "0.50"]
    saved = load_schema(RunPaths(Path(plan.shards[0].path).parents[1]).schema)
    assert saved == pa.schema([(name, pa.string()) for name in ("id", "zip", "note", "text")])


def test_csv_columns_are_text_and_empty_cells_are_empty_text(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(CSV)
    source = TableSource(src)
    assert source.schema() == pa.schema([(name, pa.string()) for name in ("id", "zip", "note", "text")])
    table = pa.Table.from_batches(list(source.batches()))
    assert table.column("id").to_pylist() == ["007", "7", "0.50"]
    assert table.column("zip").to_pylist() == ["01234", "1234", "00000"]
    assert table.column("note").to_pylist() == ["", "", ""] and table.column("note").null_count == 0


def test_an_all_empty_prompt_column_is_rejected_row_by_row(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,note\na,\nb,\n")
    job = build_job(None, {**JOB, "prompt": "{{ note }}"})
    plan = prepare_run(TableSource(src), job, tmp_path / "runs")
    assert plan.total_rows == 2 and plan.rejected_rows == 2 and plan.shards == []


def test_a_parquet_table_keeps_its_types(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"id": [7, 8], "zip": ["01234", "1234"], "note": ["", ""], "text": ["a", "b"]}), src
    )
    plan = prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "runs")
    assert [prompt for _, prompt in prompts_and_ids(plan)] == ["01234||a", "1234||b"]
    saved = load_schema(RunPaths(Path(plan.shards[0].path).parents[1]).schema)
    assert saved.field("id").type == pa.int64()


def test_csv_text_that_is_not_the_encoding_names_the_column(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\n" + b"".join(b"%d,fine\n" % i for i in range(300_000)) + b"x,caf\xe9\n")
    with pytest.raises(InputError, match=r"column\(s\) 'text' are not valid utf-8.*--encoding latin-1"):
        prepare_run(TableSource(src), build_job(None, {**JOB, "prompt": "{{ text }}"}), tmp_path / "runs")
    assert not list((tmp_path / "runs").glob("*.staging*"))
