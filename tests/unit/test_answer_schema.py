"""Structured output: the short form, schema checks, answer checks and typed columns."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from tasks.spec.answer_schema import (
    TRUNCATED,
    check_answer,
    check_schema,
    output_fields,
    response_format,
    schema_from_columns,
    strict_mode_issues,
    typed_columns,
)

COLUMNS = {
    "sentiment": ["positive", "negative", "neutral"],
    "score": "integer",
    "confidence": "number?",
    "is_spam": "boolean",
    "summary": "string",
    "topic": ["billing", "shipping", None],
}
SCHEMA = schema_from_columns(COLUMNS)
GOOD = {
    "sentiment": "positive",
    "score": 4,
    "confidence": 0.9,
    "is_spam": False,
    "summary": "Fine.",
    "topic": None,
}


def answer(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


# -- the short form ------------------------------------------------------------------------
def test_short_form_becomes_a_strict_object_schema() -> None:
    assert SCHEMA == {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "integer"},
            "confidence": {"type": ["number", "null"]},
            "is_spam": {"type": "boolean"},
            "summary": {"type": "string"},
            "topic": {"type": ["string", "null"], "enum": ["billing", "shipping", None]},
        },
        "required": ["sentiment", "score", "confidence", "is_spam", "summary", "topic"],
        "additionalProperties": False,
    }
    check_schema(SCHEMA)
    assert strict_mode_issues(SCHEMA) == []


@pytest.mark.parametrize(
    ("columns", "needle"),
    [
        ({"age": "int"}, "column 'age': unknown type 'int'"),
        ({"label": []}, "column 'label': an enum needs at least one"),
        ({"label": [None]}, "column 'label': an enum needs at least one"),
        ({"answer": [True, False]}, "column 'answer': enum values must be strings"),
        ({"label": ["a", "a"]}, "column 'label': the enum lists a value twice"),
        ({"bad name": "string"}, "column 'bad name'"),
        ({"1st": "string"}, "column '1st'"),
        ({"n": 3}, "column 'n': the type must be"),
        ({}, "columns must be a non-empty mapping"),
    ],
)
def test_short_form_errors_name_the_column(columns: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(needle)):
        schema_from_columns(columns)


# -- schema checks -------------------------------------------------------------------------
def test_check_schema_rejects_non_object_and_invalid_schemas() -> None:
    with pytest.raises(ValueError, match="must describe an object"):
        check_schema({"type": "array", "items": {"type": "string"}})
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        check_schema({"type": "object", "properties": {"a": {"type": "strnig"}}})
    with pytest.raises(ValueError, match="needs `properties`"):
        check_schema({"type": "object"})
    with pytest.raises(ValueError, match="must be a mapping"):
        check_schema([])  # type: ignore[arg-type]


def test_strict_mode_issues_point_at_the_object() -> None:
    loose = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert strict_mode_issues(loose) == [
        "/properties/a: additionalProperties must be false",
        "/properties/a: not required: b",
    ]


def test_response_format() -> None:
    assert response_format(SCHEMA, "reviews.v2") == {
        "type": "json_schema",
        "json_schema": {"name": "reviews_v2", "schema": SCHEMA, "strict": True},
    }


# -- answers -------------------------------------------------------------------------------
def test_valid_answer() -> None:
    assert check_answer(answer(), "stop", SCHEMA) is None
    assert check_answer(answer(score=3.0, confidence=None, topic="billing"), "stop", SCHEMA) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (answer(sentiment="angry"), "does not fit the schema: at $.sentiment: 'angry' is not one of"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "score"}),
            "does not fit the schema: at $: 'score' is a",
        ),
        (answer(score="four"), "does not fit the schema: at $.score: 'four' is not of type 'integer'"),
        (answer(score=4.5), "does not fit the schema: at $.score: 4.5 is not of type 'integer'"),
        (answer(extra=1), "does not fit the schema: at $: Additional properties are not allowed"),
        ("[1, 2]", "does not fit the schema: at $: [1, 2] is not of type 'object'"),
        ('{"sentiment": "positive", ', "not JSON: "),
        ("Sure! Here is the JSON you asked for", "not JSON: "),
        (None, "not JSON: the answer has no text"),
    ],
)
def test_invalid_answers_get_a_reason(text: str | None, reason: str) -> None:
    got = check_answer(text, "stop", SCHEMA)
    assert got is not None and got.startswith(reason), got


def test_truncation_is_reported_first() -> None:
    assert check_answer('{"sentiment": "posi', "length", SCHEMA) == TRUNCATED
    assert check_answer(answer(), "length", SCHEMA) == "truncated: finish_reason is length"


def test_check_answer_rejects_an_invalid_schema() -> None:
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        check_answer("{}", "stop", {"type": "object", "properties": {"a": {"type": 5}}})


# -- typed columns -------------------------------------------------------------------------
def test_output_fields_types() -> None:
    assert output_fields(SCHEMA) == [
        pa.field("sentiment", pa.string()),
        pa.field("score", pa.int64()),
        pa.field("confidence", pa.float64()),
        pa.field("is_spam", pa.bool_()),
        pa.field("summary", pa.string()),
        pa.field("topic", pa.string()),
    ]
    assert all(field.nullable for field in output_fields(SCHEMA))


def test_typed_columns_with_nulls() -> None:
    texts = [
        answer(),
        None,
        "not json",
        answer(score=3.0, confidence=1, topic="shipping", is_spam=True),
        answer(score="x"),  # wrong type in one cell: that cell is null
    ]
    got = typed_columns(texts, SCHEMA)
    assert list(got) == [field.name for field in output_fields(SCHEMA)]
    for field in output_fields(SCHEMA):
        assert got[field.name].type == field.type, field.name
    assert got["sentiment"].to_pylist() == ["positive", None, None, "positive", "positive"]
    assert got["score"].to_pylist() == [4, None, None, 3, None]
    assert got["confidence"].to_pylist() == [0.9, None, None, 1.0, 0.9]
    assert got["is_spam"].to_pylist() == [False, None, None, True, False]
    assert got["topic"].to_pylist() == [None, None, None, "shipping", None]


def test_nested_user_schema_gives_a_json_string_column() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "required": ["name", "address", "tags", "age"],
        "additionalProperties": False,
    }
    check_schema(schema)
    assert [f.type for f in output_fields(schema)] == [pa.string(), pa.string(), pa.string(), pa.int64()]
    text = json.dumps({"name": "Zoë", "address": {"city": "Oslo", "zip": "0150"}, "tags": ["a"], "age": None})
    assert check_answer(text, "stop", schema) is None
    got = typed_columns([text, None], schema)
    assert got["address"].to_pylist() == ['{"city":"Oslo","zip":"0150"}', None]
    assert got["tags"].to_pylist() == ['["a"]', None]
    assert got["name"].to_pylist() == ["Zoë", None]
    assert got["age"].to_pylist() == [None, None]
    assert got["age"].type == pa.int64()


def test_typed_columns_of_nothing() -> None:
    got = typed_columns([], SCHEMA)
    assert all(len(array) == 0 for array in got.values())
    assert got["score"].type == pa.int64()


def test_the_fast_path_for_flat_schemas_agrees_with_jsonschema() -> None:
    # answer_check skips jsonschema for the flat schemas `columns:` makes; it must accept
    # exactly what jsonschema accepts, whatever the answer holds.
    import itertools
    import json

    from jsonschema import Draft202012Validator

    from tasks.spec.answer_schema import answer_check, schema_from_columns

    schema = schema_from_columns(
        {"label": ["a", "b"], "n": "integer", "x": "number?", "ok": "boolean", "note": "string?"}
    )
    reference = Draft202012Validator(schema)
    check = answer_check(schema)
    values = [None, "a", "c", 1, 2.0, 2.5, True, False, [], {}]
    checked = accepted = 0
    for label, n, x, ok in itertools.product(values, repeat=4):
        for extra in ({}, {"more": 1}):
            answer = {"label": label, "n": n, "x": x, "ok": ok, "note": "t", **extra}
            ours = check(json.dumps(answer), "stop") is None
            assert ours == reference.is_valid(answer), answer
            checked, accepted = checked + 1, accepted + ours
    missing = {"label": "a", "n": 1, "x": None, "ok": True}
    assert check(json.dumps(missing), "stop") is not None  # `note` is required
    assert checked == 20_000 and accepted > 0
