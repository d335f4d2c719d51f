import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.infra.errors import InputError
from tasks.infra.table_io import TableSource
from tasks.spec.job import build_job
from tasks.stages.prepare import json_escape, prepare_run
from tests.helpers import write_csv

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}


def lines_of(plan) -> list[dict]:
    out = []
    for shard in plan.shards:
        out += [json.loads(line) for line in Path(shard.path).read_text(encoding="utf-8").split("\n")[:-1]]
    return out


def test_request_lines_have_the_xai_shape(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": 'a "quoted", comma\nnewline ünï😀'}, {"text": "b"}])
    job = build_job(None, {**JOB, "system": "Be brief.", "params": {"temperature": 0, "max_tokens": 9}})
    plan = prepare_run(TableSource(src), job, tmp_path / "runs")
    first = lines_of(plan)[0]
    assert set(first) == {"custom_id", "method", "url", "body"}
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["body"] == {
        "model": "grok-4.3",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": 'Classify: a "quoted", comma\nnewline ünï😀'},
        ],
        "temperature": 0,
        "max_tokens": 9,
    }


def test_custom_ids_are_deterministic_and_change_with_the_job(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "x"}, {"text": "y"}])
    a = prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "a")
    b = prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "b")
    c = prepare_run(TableSource(src), build_job(None, {**JOB, "model": "grok-3"}), tmp_path / "c")
    ids = [line["custom_id"] for line in lines_of(a)]
    assert ids == [line["custom_id"] for line in lines_of(b)]
    assert ids != [line["custom_id"] for line in lines_of(c)]
    assert len(set(ids)) == 2


def test_rerun_reuses_the_prepared_run(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "x"}])
    first = prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "runs")
    Path(first.shards[0].path).write_text("sentinel")
    again = prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "runs")
    assert again == first
    assert Path(again.shards[0].path).read_text() == "sentinel"  # not rewritten


def test_shards_respect_line_and_byte_limits(tmp_path: Path) -> None:
    rows = [{"text": f"row {i} " + "w" * (i % 50)} for i in range(1000)]
    src = write_csv(tmp_path / "in.csv", rows)
    job = build_job(None, {**JOB, "shard_max_lines": 300, "shard_max_bytes": 20_000})
    plan = prepare_run(TableSource(src), job, tmp_path / "runs")
    assert sum(s.lines for s in plan.shards) == 1000
    for shard in plan.shards:
        data = Path(shard.path).read_bytes()
        assert shard.lines <= 300 and len(data) <= 20_000 and len(data) == shard.bytes
        assert data.count(b"\n") == shard.lines
    manifest = pq.read_table(Path(plan.shards[0].path).parents[1] / "rows.parquet")
    assert manifest.column("row_index").to_pylist() == list(range(1000))
    sent = [line["custom_id"] for line in lines_of(plan)]
    assert sent == manifest.column("custom_id").to_pylist()


def test_empty_prompts_are_rejected_not_sent(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "x"}, {"text": ""}, {"text": "  "}, {"text": "y"}])
    job = build_job(None, {**JOB, "prompt": "{{ text }}"})
    plan = prepare_run(TableSource(src), job, tmp_path / "runs")
    assert plan.rejected_rows == 2 and plan.total_rows == 4
    assert len(lines_of(plan)) == 2
    manifest = pq.read_table(Path(plan.shards[0].path).parents[1] / "rows.parquet").to_pylist()
    assert [m["shard"] for m in manifest] == [0, None, None, 0]
    assert manifest[1]["reject_reason"].startswith("empty prompt")


def test_id_column_makes_ids_and_must_be_unique_and_present(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"id": "A-1", "text": "x"}, {"id": "weird id/ü", "text": "y"}])
    plan = prepare_run(TableSource(src), build_job(None, {**JOB, "id_column": "id"}), tmp_path / "runs")
    ids = [line["custom_id"] for line in lines_of(plan)]
    assert ids[0].endswith("-A-1") and "~" in ids[1]
    dup = write_csv(tmp_path / "dup.csv", [{"id": "A", "text": "x"}, {"id": "A", "text": "y"}])
    with pytest.raises(InputError, match=r"'id' has 1 duplicated value\(s\), e.g. 'A'"):
        prepare_run(TableSource(dup), build_job(None, {**JOB, "id_column": "id"}), tmp_path / "runs")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"id": [1, None], "text": ["x", "y"]}), nulls)
    with pytest.raises(InputError, match=r"'id' is empty on data row 2"):
        prepare_run(TableSource(nulls), build_job(None, {**JOB, "id_column": "id"}), tmp_path / "runs")
    with pytest.raises(InputError, match=r"id_column 'key' is not a column"):
        prepare_run(TableSource(src), build_job(None, {**JOB, "id_column": "key"}), tmp_path / "runs")
    assert not list((tmp_path / "runs").glob("*.staging*"))  # failed prepares leave nothing behind


def test_result_column_clash_names_the_option(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": "x", "status": "new"}])
    with pytest.raises(InputError, match=r"'status'.*result_prefix"):
        prepare_run(TableSource(src), build_job(None, JOB), tmp_path / "runs")
    plan = prepare_run(
        TableSource(src), build_job(None, {**JOB, "result_prefix": "grok_"}), tmp_path / "runs"
    )
    assert plan.total_rows == 1


def test_json_escaping_matches_json_dumps_for_control_characters() -> None:
    values = ["plain", 'q"b\\s', "nl\ncr\rtab\t", "bell\x07nul\x00esc\x1b", "ü😀\u2028"]
    escaped = json_escape(pa.array(values)).to_pylist()
    assert [json.loads(f'"{text}"') for text in escaped] == values


def test_csv_column_that_changes_type_later_is_read_as_text(tmp_path: Path) -> None:
    rows = [{"n": str(i), "text": "t"} for i in range(200_000)] + [{"n": "not-a-number", "text": "t"}]
    src = write_csv(tmp_path / "in.csv", rows)
    plan = prepare_run(TableSource(src), build_job(None, {**JOB, "prompt": "{{ n }}"}), tmp_path / "runs")
    assert plan.total_rows == 200_001
    assert lines_of(plan)[-1]["body"]["messages"][0]["content"] == "not-a-number"


def test_oversized_rows_are_rejected_alone(tmp_path: Path) -> None:
    src = tmp_path / "big.parquet"
    huge = "word " * (26 * 1024 * 1024 // 5)  # > 25 MB: more than xAI takes in one request
    long = "token " * 150_000  # ~900 kB: beyond grok-3's 131,072-token window
    pq.write_table(pa.table({"text": ["small", huge, long, "also small"]}), src)
    unknown = prepare_run(
        TableSource(src), build_job(None, {**JOB, "model": "some-new-model"}), tmp_path / "a"
    )
    manifest = pq.read_table(Path(unknown.shards[0].path).parents[1] / "rows.parquet").to_pylist()
    assert [m["reject_reason"] is None for m in manifest] == [True, False, True, True]
    assert manifest[1]["reject_reason"].startswith("request larger than the 25 MB")
    grok3 = prepare_run(TableSource(src), build_job(None, {**JOB, "model": "grok-3"}), tmp_path / "b")
    manifest = pq.read_table(Path(grok3.shards[0].path).parents[1] / "rows.parquet").to_pylist()
    assert [m["reject_reason"] is None for m in manifest] == [True, False, False, True]
    assert "exceeds grok-3's context window" in manifest[2]["reject_reason"]
    assert [line["custom_id"] for line in lines_of(grok3)] == [
        manifest[0]["custom_id"],
        manifest[3]["custom_id"],
    ]
