"""Structured output: ask for a JSON object per row and spread its fields into typed columns.

A job gives either a JSON Schema for the answer (`json_schema:`) or the short form
`columns: {name: type}`. The schema goes to the provider as a strict `response_format`, every
answer is checked against it (a truncated or off-schema answer becomes an `invalid_output` row
with a short reason instead of a silently wrong cell), and the valid answers become one Arrow
column per top-level property.

Column types: string -> string, integer -> int64, number -> float64, boolean -> bool, an enum
of strings -> string (plain string, not dictionary: Parquet dictionary-encodes repeated values
on write anyway, and a plain string joins and concatenates without type surprises); anything
else (object, array, mixed types, $ref) -> a string column holding compact JSON. All nullable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import orjson
import pyarrow as pa
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

SHORT_TYPES = ("string", "integer", "number", "boolean")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_FORMAT_NAME = re.compile(r"[^A-Za-z0-9_-]")  # OpenAI: name is [a-zA-Z0-9_-]{1,64}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_REASON = 300
TRUNCATED = "truncated: finish_reason is length"


# -- the schema ------------------------------------------------------------------------------
def schema_from_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """A strict object schema from the short form `{name: type}`.

    type is "string", "integer", "number" or "boolean", with a trailing "?" for nullable, or
    a list of allowed string values (an enum; a null in the list makes it nullable). Every
    property is required and no other is allowed: strict structured output demands both, and
    a fixed set of columns is what the output table needs.
    """
    if not isinstance(columns, dict) or not columns:
        raise ValueError("columns must be a non-empty mapping of column name to type")
    properties: dict[str, Any] = {}
    for name, spec in columns.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"column {name!r}: a name must start with a letter or _, hold only letters, digits "
                "and _, and be at most 64 characters"
            )
        properties[name] = _column_schema(name, spec)
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _column_schema(name: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        base = spec.strip()
        nullable = base.endswith("?")
        base = base.removesuffix("?")
        if base not in SHORT_TYPES:
            raise ValueError(
                f"column {name!r}: unknown type {spec!r} (use one of {', '.join(SHORT_TYPES)}, or a list "
                "of allowed values; add ? for nullable, e.g. integer?)"
            )
        return {"type": [base, "null"] if nullable else base}
    if isinstance(spec, list):
        nullable = None in spec
        values = [value for value in spec if value is not None]
        if not values:
            raise ValueError(f"column {name!r}: an enum needs at least one allowed value")
        odd = [value for value in values if not isinstance(value, str)]
        if odd:
            raise ValueError(
                f"column {name!r}: enum values must be strings, not {odd[0]!r} (YAML reads unquoted "
                "yes/no/true/false/on/off as booleans and digits as numbers: quote them)"
            )
        if len(set(values)) != len(values):
            raise ValueError(f"column {name!r}: the enum lists a value twice")
        if nullable:
            return {"type": ["string", "null"], "enum": [*values, None]}
        return {"type": "string", "enum": values}
    raise ValueError(
        f"column {name!r}: the type must be a type name ({', '.join(SHORT_TYPES)}) or a list of "
        f"allowed values, not {type(spec).__name__}"
    )


def check_schema(schema: dict[str, Any]) -> None:
    """ValueError unless `schema` is a valid JSON Schema whose top level is an object with
    `properties`: the answers must be objects so that their fields can become columns."""
    if not isinstance(schema, dict):
        raise ValueError(f"json_schema must be a mapping, not {type(schema).__name__}")
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top level"
        raise ValueError(
            f"json_schema is not a valid JSON Schema at {where}: {_shorten(exc.message)}"
        ) from None
    if schema.get("type") != "object":
        raise ValueError(
            'json_schema must describe an object (type: "object" at the top level), '
            f"not {schema.get('type')!r}"
        )
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise ValueError("json_schema needs `properties` at the top level: each becomes an output column")


def strict_mode_issues(schema: dict[str, Any]) -> list[str]:
    """Where `schema` breaks the rules of strict structured output (every object lists all its
    properties as required and sets additionalProperties: false). A provider may refuse such a
    schema on every request of the batch, so this is worth a warning before submitting."""
    issues: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}/{index}")
            return
        if not isinstance(node, dict):
            return
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types)
        if is_object or "properties" in node:
            properties = node.get("properties") or {}
            if node.get("additionalProperties") is not False:
                issues.append(f"{path or '/'}: additionalProperties must be false")
            missing = [key for key in properties if key not in (node.get("required") or [])]
            if missing:
                issues.append(f"{path or '/'}: not required: {', '.join(missing)}")
            for key, sub in properties.items():
                walk(sub, f"{path}/properties/{key}")
        for key in ("items", "anyOf", "oneOf", "allOf", "$defs", "definitions"):
            if key in node:
                value = node[key]
                if key in ("$defs", "definitions") and isinstance(value, dict):
                    for name, sub in value.items():
                        walk(sub, f"{path}/{key}/{name}")
                else:
                    walk(value, f"{path}/{key}")

    walk(schema, "")
    return issues


def response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The request's `response_format` for strict structured output; xAI takes OpenAI's shape.
    `name` is made to fit OpenAI's rule ([a-zA-Z0-9_-], at most 64): job names may hold dots."""
    safe = _FORMAT_NAME.sub("_", name)[:64] or "answer"
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": schema, "strict": True}}


# -- columns -----------------------------------------------------------------------------
def _kind(prop: Any) -> str:
    """The column kind of one property schema: a SHORT_TYPES name or "json"."""
    if not isinstance(prop, dict):
        return "json"
    if "type" not in prop:
        for key in ("anyOf", "oneOf"):  # the nullable spelling anyOf: [{type: X}, {type: "null"}]
            options = prop.get(key)
            if isinstance(options, list):
                rest = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
                return _kind(rest[0]) if len(rest) == 1 else "json"
        values = prop["enum"] if isinstance(prop.get("enum"), list) else [prop.get("const")]
        strings = [value for value in values if value is not None]
        return "string" if strings and all(isinstance(v, str) for v in strings) else "json"
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    kinds = {t for t in types if t != "null"}
    if kinds == {"integer", "number"}:
        return "number"
    if len(kinds) == 1 and (kind := next(iter(kinds))) in SHORT_TYPES:
        return str(kind)
    return "json"


_ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "json": pa.string(),
}


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        raise ValueError("the schema has no top-level `properties` to make columns of")
    return properties


def output_fields(schema: dict[str, Any]) -> list[pa.Field]:
    """One nullable Arrow field per top-level property, in schema order (see the module doc
    for the type mapping)."""
    return [
        pa.field(name, _ARROW_TYPES[_kind(prop)], nullable=True) for name, prop in _properties(schema).items()
    ]


def _as_string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # 3.0 is a valid JSON Schema integer
        value = int(value)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _as_boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode("utf-8")


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": _as_string,
    "integer": _as_integer,
    "number": _as_number,
    "boolean": _as_boolean,
    "json": _as_json,
}


def typed_columns(texts: Iterable[str | None], schema: dict[str, Any]) -> dict[str, pa.Array]:
    """Typed arrays (types as output_fields) from the answer texts, one entry per text.

    A None text, or one that is not a JSON object, gives nulls in every column: pass None for
    rows that check_answer rejected, so that only valid answers fill columns. This does not
    validate again (check_answer already did, per row); a value whose type does not fit its
    column becomes null rather than an error.
    """
    fields = output_fields(schema)
    converters = [
        (field.name, _CONVERTERS[_kind(prop)])
        for field, prop in zip(fields, _properties(schema).values(), strict=True)
    ]
    values: dict[str, list[Any]] = {field.name: [] for field in fields}
    lists = [(values[name], convert, name) for name, convert in converters]
    for text in texts:
        answer: Any = None
        if text is not None:
            try:
                answer = orjson.loads(text)
            except orjson.JSONDecodeError:
                answer = None
        if isinstance(answer, dict):
            for column, convert, name in lists:
                column.append(convert(answer.get(name)))
        else:
            for column, _, _ in lists:
                column.append(None)
    return {field.name: pa.array(values[field.name], type=field.type) for field in fields}


# -- answers -------------------------------------------------------------------------------
def _schema_key(schema: dict[str, Any]) -> str:
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except TypeError:
        return json.dumps(schema, sort_keys=True, default=str)


@lru_cache(maxsize=64)
def _validator_for_key(key: str) -> Validator:
    schema = json.loads(key)
    check_schema(schema)
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema)


def _validator(schema: dict[str, Any]) -> Validator:
    """One validator per distinct schema (keyed by its canonical JSON, so a mutated or
    re-built schema never meets a stale validator); building one costs far more than a row."""
    return _validator_for_key(_schema_key(schema))


def _shorten(message: str) -> str:
    return message if len(message) <= _MAX_REASON else message[: _MAX_REASON - 3] + "..."


AnswerCheck = Callable[[str | None, str | None], str | None]
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _flat_checker(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A fast yes/no for the flat schemas `columns:` produces (every property required,
    nothing else allowed, simple types or a string enum, optionally nullable); None for any
    other schema. jsonschema costs ~20 us an answer; this ~1 us. A "no" is explained by
    jsonschema, so the reasons stay the same."""
    props = schema.get("properties")
    if (
        schema.get("type") != "object"
        or schema.get("additionalProperties") is not False
        or not isinstance(props, dict)
        or sorted(schema.get("required") or []) != sorted(props)
        or set(schema) - {"type", "properties", "required", "additionalProperties"}
    ):
        return None
    fields: list[tuple[str, tuple[type, ...], bool, frozenset[Any] | None]] = []
    for name, prop in props.items():
        if not isinstance(prop, dict) or set(prop) - {"type", "enum"}:
            return None
        kinds = prop.get("type")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not isinstance(kinds, list) or not kinds:
            return None
        nullable = "null" in kinds
        base = [k for k in kinds if k != "null"]
        if len(base) != 1 or base[0] not in _SIMPLE_TYPES:
            return None
        enum = prop.get("enum")
        fields.append((name, _SIMPLE_TYPES[base[0]], nullable, frozenset(enum) if enum is not None else None))
    names = frozenset(props)

    def fits(answer: Any) -> bool:
        if type(answer) is not dict or answer.keys() != names:
            return False
        for name, types, nullable, enum in fields:
            value = answer[name]
            if value is None:
                if not nullable:
                    return False
                continue
            if type(value) is bool and bool not in types:  # JSON true is not an integer
                return False
            if not isinstance(value, types) or (enum is not None and value not in enum):
                return False
        return True

    return fits


def answer_check(schema: dict[str, Any]) -> AnswerCheck:
    """check_answer for one schema, with the validator (and the fast path) built once."""
    validator = _validator(schema)
    fits = _flat_checker(schema) or validator.is_valid

    def check(text: str | None, finish_reason: str | None) -> str | None:
        if finish_reason == "length":
            return TRUNCATED
        if text is None:
            return "not JSON: the answer has no text"
        try:
            answer = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return f"not JSON: {exc}"
        if fits(answer) or validator.is_valid(answer):
            return None
        error = best_match(validator.iter_errors(answer))
        if error is None:  # pragma: no cover - is_valid said there is one
            return "does not fit the schema"
        return f"does not fit the schema: at {error.json_path}: {_shorten(error.message)}"

    return check


def check_answer(text: str | None, finish_reason: str | None, schema: dict[str, Any]) -> str | None:
    """None when `text` is a JSON object that fits `schema`; otherwise a short reason for the
    row's error column. Truncation is checked first: a cut-off answer is rarely valid JSON,
    and "not JSON" would hide that raising max_tokens is the fix."""
    return answer_check(schema)(text, finish_reason)
