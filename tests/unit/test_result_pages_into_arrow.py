"""xAI result pages are read column by column into Arrow (providers.xai.ResultColumns) and
collected without a dict per row (stages.collect.write_results). The records must be the
ones the per-row path gives: normalize_result for every entry, then the dict-based collect
it replaced (kept below as `_per_row_results`, the oracle), compared as Parquet tables."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.infra.ledger import BatchRow
from tasks.infra.records import INVALID_OUTPUT, MANIFEST_SCHEMA, RESULT_SCHEMA, SUCCEEDED
from tasks.infra.run_layout import RunPaths
from tasks.providers.base import BatchState
from tasks.providers.completion import RECORD_SCHEMA, records_table
from tasks.providers.xai import ResultColumns, XaiProvider, normalize_result
from tasks.stages.collect import (
    AnswerCheck,
    answer_checker,
    collect_batch,
    missing_outcome,
    write_results,
)

UNICODE = 'line\u2028sep\u0085nel\u2029 "q" \\ é 日本 🎉 \x00 \ufeff'
COMPLETION = {
    "id": "e7c2162b",
    "object": "chat.completion",
    "created": 1762801725,
    "model": "grok-4",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "303", "refusal": None},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 706, "completion_tokens": 22, "total_tokens": 827,
        "prompt_tokens_details": {"text_tokens": 706, "audio_tokens": 0, "cached_tokens": 679},
        "completion_tokens_details": {"reasoning_tokens": 99, "audio_tokens": 0},
        "num_sources_used": 0, "cost_in_usd_ticks": 12_345_000,
    },
    "system_fingerprint": "fp_1944a19e1f",
}  # fmt: skip


def success(custom_id: Any, **changes: Any) -> dict[str, Any]:
    """A result entry in the usual shape; `changes` set fields of the completion by path
    ("usage.prompt_tokens", "choices.0.message.content"); the value DROP removes the field."""
    completion = copy.deepcopy(COMPLETION)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = completion
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DROP:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return {"batch_request_id": custom_id, "batch_result": {"response": {"chat_get_completion": completion}}}


DROP = object()

# Every odd shape the per-row tests cover (tests/unit/test_provider_state_mapping.py), and more.
ODD_ENTRIES: list[dict[str, Any]] = [
    {"batch_request_id": "e-object-13", "batch_result": {"error": {"code": 13, "message": "internal"}}},
    {"batch_request_id": "e-object-3", "batch_result": {"error": {"code": 3, "message": "bad arg"}}},
    {"batch_request_id": "e-string", "batch_result": {"error": "plain string error"}},
    {"batch_request_id": "e-top-level", "batch_result": {}, "error_message": "top-level message"},
    {"batch_request_id": "e-cancelled", "batch_result": {"error": {"code": 1, "message": "cancelled"}}},
    {
        "batch_request_id": "e-nested",
        "batch_result": {"error": {"error": {"message": "nested", "code": "x"}}},
    },
    {"batch_request_id": "e-neither", "batch_result": {}},
    {"batch_request_id": "e-no-result"},
    {"batch_request_id": "e-null-response", "batch_result": {"response": None}},
    {"batch_request_id": "e-response-not-dict", "batch_result": {"response": {"chat_get_completion": "x"}}},
    {"custom_id": "e-custom-id-key", "batch_result": {"error": "by custom_id"}},
    {"batch_request_id": "", "custom_id": "e-empty-request-id", "batch_result": {"error": "empty id"}},
    {**success("s-code-0"), "batch_result": {"error": {"code": 0}, **success("x")["batch_result"]}},
    {**success("s-error-key-null"), "error": None},
    {"batch_request_id": "s-other-endpoint", "batch_result": {"response": {"responses": COMPLETION}}},
    success("s-no-usage", usage=DROP),
    success("s-null-usage", usage=None),
    success("s-usage-not-dict", usage=[1, 2]),
    success("s-no-details", **{"usage.prompt_tokens_details": DROP, "usage.completion_tokens_details": DROP}),
    success("s-null-details", **{"usage.prompt_tokens_details": None}),
    success("s-no-cached", **{"usage.prompt_tokens_details.cached_tokens": DROP}),
    success(
        "s-responses-names",
        usage={
            "input_tokens": 50,
            "output_tokens": 7,
            "cost_in_usd_ticks": 10,
            "input_tokens_details": {"cached_tokens": 5},
            "output_tokens_details": {"reasoning_tokens": 3},
        },
    ),
    success("s-null-prompt", **{"usage.prompt_tokens": None, "usage.input_tokens": 44}),
    success("s-negative", **{"usage.completion_tokens": -5, "usage.prompt_tokens": -1}),
    success("s-float-count", **{"usage.prompt_tokens": 12.9}),
    success("s-bool-count", **{"usage.completion_tokens": True}),
    success("s-string-count", **{"usage.completion_tokens": "7"}),
    success("s-no-ticks", **{"usage.cost_in_usd_ticks": DROP}),
    success("s-null-ticks", **{"usage.cost_in_usd_ticks": None}),
    success("s-float-ticks", **{"usage.cost_in_usd_ticks": 1234.5}),
    success("s-bool-ticks", **{"usage.cost_in_usd_ticks": True}),
    success("s-huge-ticks", **{"usage.cost_in_usd_ticks": 2**60 + 1}),
    success("s-past-int64-ticks", **{"usage.cost_in_usd_ticks": 2**70 + 3}),
    success("s-null-content", **{"choices.0.message.content": None}),
    success(
        "s-tool-calls",
        **{
            "choices.0.message.content": None,
            "choices.0.message.tool_calls": [
                {"id": "c1", "function": {"name": "f", "arguments": '{"é": 1}'}}
            ],
        },
    ),
    success("s-no-choices", choices=[]),
    success("s-null-choices", choices=None),
    success("s-no-message", **{"choices.0.message": DROP}),
    success("s-no-finish", **{"choices.0.finish_reason": DROP}),
    success("s-length", **{"choices.0.finish_reason": "length"}),
    success("s-no-model", model=DROP),
    success("s-reasoning", **{"usage.completion_tokens_details.reasoning_tokens": 4096}),
    success("s-unicode", **{"choices.0.message.content": UNICODE}),
    success(12345),  # not an id of ours: matches no request
    success(None),
    success("not-in-the-shard"),
]

SHARD_IDS: list[str] = [
    *(str(entry.get("batch_request_id") or entry["custom_id"]) for entry in ODD_ENTRIES[:-3]),
    *(f"plain-{i}" for i in range(40)),
    "never-answered-1",
    "never-answered-2",
]


def plain_entries(fitting: int = 0) -> list[dict[str, Any]]:
    """40 entries in the usual shape; the first `fitting` answers fit STRUCTURED."""
    return [
        success(
            f"plain-{i}",
            **{
                "usage.prompt_tokens": 100 + i,
                "choices.0.message.content": '{"answer": "x"}' if i < fitting else f"ans {i}",
            },
        )
        for i in range(40)
    ]


def pages_of(entries: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [entries[i : i + size] for i in range(0, len(entries), size)]


# -- the oracle: the per-row collect that the column path replaced ---------------------------
def _per_row_results(
    item_pages: list[list[Any]],
    members: list[str],
    missing: tuple[str, str, bool],
    check: AnswerCheck | None,
    batch_id: str,
    round_no: int,
) -> pa.Table:
    """normalize_result per entry, the first record per member (in page order), the check
    per record, the missing outcome for the rest: the former stages.collect.write_results."""
    wanted, seen = set(members), set[str]()
    records: list[dict[str, Any]] = []
    for page in item_pages:
        normalized = [normalize_result(item) for item in page]
        fresh = [r for r in normalized if r["custom_id"] in wanted and r["custom_id"] not in seen]
        seen.update(r["custom_id"] for r in fresh)
        for record in fresh:
            if check is not None:
                check(record)
        records += fresh
    status, error, retryable = missing
    records += [
        {"custom_id": cid, "status": status, "error": error, "retryable": retryable}
        for cid in members
        if cid not in seen
    ]
    columns = {f.name: pa.array([r.get(f.name) for r in records], type=f.type) for f in RECORD_SCHEMA}
    columns["batch_id"] = pa.array([batch_id] * len(records), pa.string())
    columns["round"] = pa.array([round_no] * len(records), pa.int32())
    return pa.table({f.name: columns[f.name] for f in RESULT_SCHEMA})


# -- driving the real xAI paging over served page bytes ----------------------------------------
class ServedPages(XaiProvider):
    """XaiProvider whose GET /batches/{id}/results serves the given pages as JSON bytes."""

    def __init__(self, item_pages: list[list[Any]]) -> None:
        super().__init__("http://127.0.0.1:9/v1", api_key="test", max_retries=0)
        tokens = [*(str(i + 1) for i in range(len(item_pages) - 1)), None]
        self.bodies = [  # json, not orjson: orjson writes no integer past 64 bits
            json.dumps({"results": page, "pagination_token": token}, ensure_ascii=False)
            for page, token in zip(item_pages, tokens, strict=True)
        ]

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        assert path.endswith("/results"), path
        return orjson.loads(self.bodies[int((params or {}).get("pagination_token") or 0)])


def _run(tmp_path: Path, members: list[str]) -> tuple[RunPaths, BatchRow]:
    paths = RunPaths(tmp_path / "run")
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    n = len(members)
    manifest = {
        "custom_id": pa.array(members, pa.string()),
        "row_index": pa.array(range(n), pa.int64()),
        "shard": pa.array([1] * n, pa.int32()),
    }
    columns = [manifest.get(f.name, pa.nulls(n, f.type)) for f in MANIFEST_SCHEMA]
    pq.write_table(pa.table(columns, schema=MANIFEST_SCHEMA), paths.manifest)
    row = BatchRow("grok-batch-k-r1-s00001", "k", 1, 1, "s", n, "created", "f", "batch_1", "done", 0, None)
    return paths, row


def _collected(provider: XaiProvider, paths: RunPaths, row: BatchRow, check: AnswerCheck | None) -> pa.Table:
    return pq.read_table(collect_batch(provider, paths, row, check), schema=RESULT_SCHEMA)


def assert_same(new: pa.Table, old: pa.Table) -> None:
    assert new.schema == old.schema
    assert new.to_pylist() == old.to_pylist()
    assert new.equals(old)


STRUCTURED = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("page_size", [1, 7, 1000])
@pytest.mark.parametrize("structured", [False, True], ids=["free-text", "structured"])
def test_column_path_collects_what_the_per_row_path_did(
    tmp_path: Path, page_size: int, structured: bool
) -> None:
    plain = plain_entries(fitting=3 if structured else 0)
    pages = pages_of(plain[:20] + ODD_ENTRIES + plain[20:], page_size)
    pages.append(  # ids answered on an earlier page: the first record stays
        [success(i, **{"choices.0.message.content": "a later duplicate"}) for i in ("plain-3", "e-string")]
    )
    check = answer_checker(STRUCTURED, retry=True) if structured else None
    paths, row = _run(tmp_path, SHARD_IDS)
    new = _collected(ServedPages(pages), paths, row, check)
    old = _per_row_results(pages, SHARD_IDS, missing_outcome(BatchState.DONE, None), check, "batch_1", 1)
    assert_same(new, old)
    by_id = {r["custom_id"]: r for r in new.to_pylist()}
    assert by_id["s-unicode"]["response"] == UNICODE and by_id["e-string"]["error"] == "plain string error"
    assert by_id["e-cancelled"]["status"] == "cancelled" and not by_id["e-cancelled"]["retryable"]
    assert by_id["s-no-usage"]["prompt_tokens"] is None and by_id["s-no-cached"]["cached_tokens"] == 0
    assert (by_id["s-reasoning"]["completion_tokens"], by_id["s-reasoning"]["reasoning_tokens"]) == (22, 4096)
    assert by_id["plain-3"]["response"] == "ans 3" and by_id["e-string"]["status"] == "failed"
    assert by_id["never-answered-1"]["status"] == "failed" and by_id["never-answered-1"]["retryable"]
    if structured:
        assert by_id["plain-0"]["status"] == SUCCEEDED and by_id["plain-10"]["status"] == INVALID_OUTPUT


def test_the_usual_page_is_read_without_the_per_row_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path really is taken for the usual shape (and agrees with normalize_result)."""
    import tasks.providers.xai as xai

    entries = plain_entries()
    expected = records_table([normalize_result(e) for e in entries])
    monkeypatch.setattr(xai, "normalize_result", lambda item: pytest.fail(f"per-row path for {item}"))
    columns = ResultColumns()
    columns.add(entries[:25])
    columns.add(entries[25:])
    assert columns.table().equals(expected)


def test_iter_results_and_iter_result_tables_give_the_same_records() -> None:
    pages = pages_of(plain_entries() + ODD_ENTRIES[:-3], 9)
    provider = ServedPages(pages)
    as_dicts = [r for page in provider.iter_results("b") for r in page]
    tables = list(provider.iter_result_tables("b", group_rows=20))
    assert all(t.schema == RECORD_SCHEMA for t in tables) and len(tables) == 4
    assert pa.concat_tables(tables).equals(records_table(as_dicts))


def test_an_id_twice_on_one_page_keeps_its_first_record(tmp_path: Path) -> None:
    """(The per-row collect wrote both records of an id repeated within one page.)"""
    page = [success("a", **{"choices.0.message.content": "first"}), success("b"), success("a")]
    paths, row = _run(tmp_path, ["a", "b"])
    table = _collected(ServedPages([page]), paths, row, None)
    assert table.column("custom_id").to_pylist() == ["a", "b"]
    assert table.column("response").to_pylist() == ["first", "303"]


def test_rejected_and_unsent_batches_have_only_missing_records(tmp_path: Path) -> None:
    paths, row = _run(tmp_path, ["a", "b"])
    path = write_results(paths, row, [], ("cancelled", "never sent", False))
    table = pq.read_table(path)
    assert table.column("status").to_pylist() == ["cancelled", "cancelled"]
    assert table.column("error").to_pylist() == ["never sent", "never sent"]
    assert pc.all(pc.is_null(table.column("response"))).as_py()
    assert table.column("batch_id").to_pylist() == ["batch_1", "batch_1"]


# -- property: any entry, the usual shape or not, gives normalize_result's record -----------
_count = st.one_of(
    st.integers(-5, 10**6),
    st.integers(-(2**63), 2**64 - 1),  # orjson reads up to 2**64 - 1
    st.none(),
    st.booleans(),
    st.floats(-10, 1e6, allow_nan=False),
    st.just("3"),
)
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    ticks = st.one_of(st.integers(-(2**53), 2**53), st.integers(2**53, 2**64 - 1), _count)
    item = success(
        draw(st.one_of(_text, st.sampled_from(["", "r1"]))),
        **{
            "usage.prompt_tokens": draw(_count),
            "usage.completion_tokens": draw(_count),
            "usage.prompt_tokens_details.cached_tokens": draw(_count),
            "usage.completion_tokens_details.reasoning_tokens": draw(_count),
            "usage.cost_in_usd_ticks": draw(ticks),
            "choices.0.message.content": draw(st.one_of(_text, st.none())),
            "choices.0.finish_reason": draw(st.sampled_from(["stop", "length", None])),
            "model": draw(st.one_of(_text, st.none())),
        },
    )
    drop = draw(st.sets(st.sampled_from(["usage", "choices", "model", "cost", "details"])))
    completion = item["batch_result"]["response"]["chat_get_completion"]
    for key in drop & {"usage", "choices", "model"}:
        del completion[key]
    if "cost" in drop and "usage" in completion:
        del completion["usage"]["cost_in_usd_ticks"]
    if "details" in drop and "usage" in completion:
        del completion["usage"]["prompt_tokens_details"]
    error = draw(
        st.one_of(
            st.none(),
            _text,
            st.fixed_dictionaries({"code": st.integers(0, 16), "message": _text}),
        )
    )
    if error is not None:
        item["batch_result"]["error"] = error
    return item


def _normalized(items: list[dict[str, Any]]) -> pa.Table:
    records = [normalize_result(item) for item in items]
    for record in records:
        if not isinstance(record["custom_id"], str):
            record["custom_id"] = None
    return records_table(records)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries(), max_size=12))
def test_any_entries_give_the_per_row_records(items: list[dict[str, Any]]) -> None:
    items = [orjson.loads(orjson.dumps(item)) for item in items]  # as a page decodes
    try:
        expected = _normalized(items)
    except (OverflowError, pa.ArrowException) as exc:  # the per-row path refuses it too
        with pytest.raises(type(exc)):
            columns = ResultColumns()
            columns.add(items)
            columns.table()
        return
    columns = ResultColumns()
    columns.add(items)
    got = columns.table()
    assert got.to_pylist() == expected.to_pylist()
    assert got.equals(expected)


def test_bodies_round_trip_through_json() -> None:
    """The served bytes are JSON text a real page could hold (ensure_ascii off, raw U+2028)."""
    body = ServedPages([[ODD_ENTRIES[-4]]]).bodies[0]
    assert "\u2028" in body and orjson.loads(body)["results"][0] == ODD_ENTRIES[-4]
