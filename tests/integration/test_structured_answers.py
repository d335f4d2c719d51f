"""Structured output through the whole pipeline: the strict response_format on every request
line sent, typed columns after the result columns, invalid and truncated answers kept as
`invalid_output` rows (retried only when the job says so), and bad schemas refused before
anything is sent. The emulator answers a json_schema request with an object derived from the
request (emulator.completions.structured_answer), so every cell can be recomputed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from emulator.completions import expected_answer, invalid_output, structured_answer
from tasks import start
from tasks.infra.errors import GrokBatchError, JobSpecError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.spec.job import JobSpec, build_job
from tests.helpers import run_to_end, write_csv

COLUMNS = {
    "sentiment": ["positive", "negative", "neutral"],
    "stars": "integer",
    "shipping_mentioned": "boolean",
    "summary": "string",
}
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "stars": {"type": "integer"},
        "shipping_mentioned": {"type": "boolean"},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "stars", "shipping_mentioned", "summary"],
    "additionalProperties": False,
}
RESULT_COLUMNS = [
    "custom_id",
    "status",
    "response",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cost_usd",
    "estimated_cost_usd",
    "service_cost_usd",
    "attempts",
    "from_cache",
    "batch_id",
    "error",
]
TYPED = ["sentiment", "stars", "shipping_mentioned", "summary"]
TEXTS = [
    "I love it, great and fast shipping",
    "Broke after a week, terrible",
    "It is a chair with four legs",
    "Late delivery and the box was broken",
    "Works great, would recommend",
]
FAST_SYNC = {"sync_requests_per_minute": 60_000}


def job(**fields: Any) -> JobSpec:
    base = {"model": "grok-4.3", "prompt": "Review: {{ text }}", "id_column": "id", "columns": COLUMNS}
    return build_job(None, {**base, **FAST_SYNC, **fields})


def table_of(tmp_path: Path, count: int = 12, name: str = "in.csv") -> Path:
    rows = [{"id": f"r{i:02d}", "text": f"#{i} {TEXTS[i % len(TEXTS)]}"} for i in range(count)]
    return write_csv(tmp_path / name, rows)


def sent_batches(emulator: RunningEmulator) -> list[dict[str, dict[str, Any]]]:
    """custom_id -> body of every batch the emulator was given, in creation order (what it
    parsed from the uploaded files)."""
    with emulator.state.lock:
        records = [emulator.state.batches[i] for i in emulator.state.batch_order]
    return [dict(zip(r.custom_ids, r.bodies, strict=True)) for r in records]


def sent_bodies(emulator: RunningEmulator) -> dict[str, dict[str, Any]]:
    bodies: dict[str, dict[str, Any]] = {}
    for batch in sent_batches(emulator):
        bodies.update(batch)
    return bodies


def rows_of(output: Path) -> list[dict[str, Any]]:
    return pq.read_table(output).to_pylist()


# -- typed columns ---------------------------------------------------------------------------
def test_columns_job_sends_a_strict_schema_and_writes_typed_columns(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "out.parquet"
    summary = run_to_end(table_of(tmp_path), job(), data_dir, out)[0]
    assert summary.by_status["succeeded"] == 12
    bodies = sent_bodies(emulator)
    assert len(bodies) == 12
    for body in bodies.values():  # every request line uploaded asks for the strict schema
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
        }
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", *RESULT_COLUMNS, *TYPED]
    assert [table.schema.field(name).type for name in TYPED] == [
        pa.string(),
        pa.int64(),
        pa.bool_(),
        pa.string(),
    ]
    rows = table.to_pylist()
    for row in rows:
        expected = structured_answer(bodies[row["custom_id"]])
        assert expected is not None and set(expected) == set(TYPED)
        assert {name: row[name] for name in TYPED} == expected, row["id"]
        assert json.loads(row["response"]) == expected
        assert row["status"] == "succeeded" and row["error"] is None
    # the sentiment the emulator reads from each text, and the boolean it derives from it
    assert [r["sentiment"] for r in rows[:5]] == ["positive", "negative", "neutral", "negative", "positive"]
    assert [r["shipping_mentioned"] for r in rows[:5]] == [True, False, False, False, True]
    assert all(1 <= r["stars"] <= 5 for r in rows)
    assert rows[0]["summary"].startswith("positive (emulated answer ")


def test_sync_mode_gives_the_same_typed_columns(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = table_of(tmp_path)
    batch_out, sync_out = tmp_path / "batch.parquet", tmp_path / "sync.parquet"
    run_to_end(src, job(), data_dir, batch_out)[0]
    summary = run_to_end(src, job(mode="sync", cache=False), data_dir, sync_out)[0]
    assert summary.mode == "sync"
    assert emulator.state.count("POST", "/v1/chat/completions", 200) == 12
    assert emulator.state.count("POST", "/v1/batches", 200) == 1  # the batch run's only
    batch, sync = pq.read_table(batch_out), pq.read_table(sync_out)
    assert sync.column_names == batch.column_names == ["id", "text", *RESULT_COLUMNS, *TYPED]
    assert sync.select(TYPED).schema == batch.select(TYPED).schema
    assert sync.select(["id", *TYPED]).to_pylist() == batch.select(["id", *TYPED]).to_pylist()
    assert sync.column("from_cache").to_pylist() == [False] * 12
    assert sync.column("status").to_pylist() == ["succeeded"] * 12


def test_nested_property_of_a_json_schema_becomes_a_json_string_column(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "details": {
                "type": "object",
                "properties": {
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                },
                "required": ["confidence", "tags"],
                "additionalProperties": False,
            },
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["label", "details", "score"],
        "additionalProperties": False,
    }
    out = tmp_path / "out.parquet"
    run_to_end(table_of(tmp_path, 10), job(columns=None, json_schema=schema), data_dir, out)[0]
    bodies = sent_bodies(emulator)
    table = pq.read_table(out)
    assert table.column_names[-3:] == ["label", "details", "score"]
    assert [table.schema.field(n).type for n in ("label", "details", "score")] == [
        pa.string(),
        pa.string(),
        pa.int64(),
    ]
    for row in table.to_pylist():
        expected = structured_answer(bodies[row["custom_id"]])
        assert expected is not None
        assert row["label"] == expected["label"] and row["score"] == expected["score"]
        assert isinstance(row["details"], str)
        details = json.loads(row["details"])
        assert details == expected["details"]
        assert 0 <= details["confidence"] <= 1 and len(details["tags"]) == 2


# -- invalid and truncated answers --------------------------------------------------------------
def _assert_invalid_rows_keep_the_raw_text(
    rows: list[dict[str, Any]], bodies: dict[str, dict], rate: float
) -> None:
    for row in rows:
        assert row["status"] == "invalid_output", row["id"]
        raw = invalid_output(bodies[row["custom_id"]], rate, 0)
        assert raw is not None and row["response"] == raw  # the raw text is kept
        if raw.startswith("{"):  # JSON with a value outside the sentiment enum
            assert row["error"].startswith("does not fit the schema: at $.sentiment"), row["error"]
        else:  # prose
            assert row["error"].startswith("not JSON"), row["error"]
        assert [row[name] for name in TYPED] == [None] * 4
        assert row["finish_reason"] == "stop"


def test_invalid_answers_are_retried_when_the_job_says_so(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(invalid_output_rate=1.0)
    out = tmp_path / "out.parquet"
    summary = run_to_end(
        table_of(tmp_path, 10), job(retry_invalid_output=True, max_attempts=2), data_dir, out
    )[0]
    assert summary.by_status["invalid_output"] == 10 and summary.rounds == 2
    batches = sent_batches(emulator)
    assert [len(b) for b in batches] == [10, 10]  # every row sent again in round 2
    assert emulator.state.count("POST", "/v1/batches", 200) == 2
    rows = rows_of(out)
    assert [r["attempts"] for r in rows] == [2] * 10
    _assert_invalid_rows_keep_the_raw_text(rows, sent_bodies(emulator), 1.0)
    assert {r["batch_id"] for r in rows} == {emulator.state.batch_order[1]}  # the last round's outcome


def test_invalid_answers_are_not_retried_by_default(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(invalid_output_rate=1.0)
    out = tmp_path / "out.parquet"
    summary = run_to_end(table_of(tmp_path, 10), job(max_attempts=3), data_dir, out)[0]
    assert summary.by_status["invalid_output"] == 10 and summary.rounds == 1
    assert emulator.state.count("POST", "/v1/batches", 200) == 1  # no follow-up round
    rows = rows_of(out)
    assert [r["attempts"] for r in rows] == [1] * 10
    _assert_invalid_rows_keep_the_raw_text(rows, sent_bodies(emulator), 1.0)
    # they were billed: the answers came back, just not in the shape asked for
    assert all(r["cost_usd"] > 0 and r["completion_tokens"] > 0 for r in rows)


def test_a_fraction_of_invalid_answers_lands_on_exactly_the_rows_that_got_them(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(invalid_output_rate=0.5)
    out = tmp_path / "out.parquet"
    summary = run_to_end(table_of(tmp_path, 20), job(), data_dir, out)[0]
    bodies = sent_bodies(emulator)
    rows = rows_of(out)
    broken = {r["id"] for r in rows if invalid_output(bodies[r["custom_id"]], 0.5, 0) is not None}
    assert {r["id"] for r in rows if r["status"] == "invalid_output"} == broken
    assert summary.by_status["invalid_output"] == len(broken) == 6
    assert summary.by_status["succeeded"] == 14
    _assert_invalid_rows_keep_the_raw_text([r for r in rows if r["id"] in broken], bodies, 0.5)
    for row in rows:
        if row["id"] not in broken:
            assert {n: row[n] for n in TYPED} == structured_answer(bodies[row["custom_id"]])
            assert row["error"] is None


def test_truncated_answer_is_invalid_output_with_a_truncated_reason(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "out.parquet"
    summary = run_to_end(table_of(tmp_path, 10), job(params={"max_tokens": 8}), data_dir, out)[0]
    assert summary.by_status["invalid_output"] == 10 and summary.rounds == 1
    bodies = sent_bodies(emulator)
    for row in rows_of(out):
        body = bodies[row["custom_id"]]
        assert body["max_tokens"] == 8
        assert row["finish_reason"] == "length"
        assert row["status"] == "invalid_output"
        assert row["error"] == "truncated: finish_reason is length"
        assert row["response"] == expected_answer(body)[:32]  # 8 tokens of ~4 characters
        assert row["completion_tokens"] == 8 and row["attempts"] == 1
        assert [row[name] for name in TYPED] == [None] * 4


# -- refused before anything is sent -------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"columns": None, "json_schema": {"type": "object", "properties": {"a": {"type": "strin"}}}},
            r"json_schema is not a valid JSON Schema",
        ),
        (
            {"columns": None, "json_schema": {"type": "array", "items": {"type": "string"}}},
            r"must describe an object",
        ),
        ({"json_schema": SCHEMA}, r"give either `columns` or `json_schema`, not both"),
        ({"columns": {"stars": "int"}}, r"column 'stars': unknown type 'int'"),
        ({"columns": {"ok": [True, False]}}, r"column 'ok': enum values must be strings"),
        ({"params": {"response_format": {"type": "json_object"}}}, r"params.response_format"),
    ],
    ids=["bad schema", "not an object", "both", "unknown type", "yaml booleans", "response_format twice"],
)
def test_bad_structured_jobs_are_refused_before_anything_is_sent(
    emulator: RunningEmulator, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(JobSpecError, match=message):
        job(**fields)
    assert emulator.state.request_log == []


@pytest.mark.parametrize(
    ("columns", "clash"),
    [({"status": "string", "stars": "integer"}, "status"), ({"text": "string"}, "text")],
    ids=["result column", "input column"],
)
def test_typed_column_that_clashes_with_another_column_is_refused_before_upload(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, columns: dict[str, Any], clash: str
) -> None:
    # A typed column named like a result column (or an input column) would put two columns of
    # that name in the output; the job must be refused before anything is paid for.
    ledger = Ledger(default_ledger_url(data_dir))
    try:
        with pytest.raises(GrokBatchError, match=repr(clash)):
            spec = job(columns=columns)
            start.start_run(
                TableSource(table_of(tmp_path, 10)), spec, data_dir / "runs", ledger, tmp_path / "o.parquet"
            )
    finally:
        ledger.close()
    assert emulator.state.request_log == []
