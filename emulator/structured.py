"""Deterministic JSON answers for structured-output requests (`response_format`).

Pipelines that ask for JSON parse and validate what comes back; the emulator
must therefore answer with an object that fits the request's schema, derived
only from the request (sentiment, digest) so tests can recompute it, and must be
able to answer wrongly on purpose (`broken_answer`) to exercise the invalid path.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

_MAX_REF_DEPTH = 16


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the answer must fit: {} for json_object, None without response_format."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {}
    return None


def dumps(value: Any) -> str:
    """The one stable text form of a structured answer."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _number(digest: str, path: str) -> int:
    return int(hashlib.sha256(f"{digest}:{path}".encode()).hexdigest()[:8], 16)


class _Builder:
    """Walks a schema and picks, for every node, a value derived from the request."""

    def __init__(self, root: dict[str, Any], sentiment: str, text: str, digest: str) -> None:
        self.root, self.sentiment, self.text, self.digest = root, sentiment, text, digest

    def resolve(self, schema: Any) -> Any:
        for _ in range(_MAX_REF_DEPTH):
            ref = schema.get("$ref") if isinstance(schema, dict) else None
            if not isinstance(ref, str) or not ref.startswith("#"):
                return schema
            target: Any = self.root
            for part in filter(None, ref.lstrip("#").split("/")):
                if not isinstance(target, dict):
                    return {}
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            schema = target
        return schema

    def _is_null(self, schema: Any) -> bool:
        resolved = self.resolve(schema)
        return isinstance(resolved, dict) and resolved.get("type") == "null"

    def value(self, schema: Any, path: str, top: bool = False) -> Any:
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return self.text
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            choices = schema["enum"]
            return (
                self.sentiment
                if self.sentiment in choices
                else choices[_number(self.digest, path) % len(choices)]
            )
        for key in ("anyOf", "oneOf", "allOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                real = [o for o in options if not self._is_null(o)] or options
                return self.value(real[0], path)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None and "properties" in schema:
            kind = "object"
        return self._typed(str(kind), schema, path, top)

    def _typed(self, kind: str, schema: dict[str, Any], path: str, top: bool) -> Any:
        if kind == "object":
            properties = schema.get("properties")
            if not isinstance(properties, dict):
                return {}
            required = schema.get("required")
            keys = list(properties) if top or not isinstance(required, list) else required
            return {k: self.value(properties.get(k, {}), f"{path}.{k}") for k in keys}
        if kind == "array":
            count = int(schema.get("minItems") or 0)
            return [self.value(schema.get("items", {}), f"{path}[{i}]") for i in range(count)]
        if kind in ("integer", "number"):
            return self._numeric(kind, schema, path)
        if kind == "boolean":
            return self.sentiment == "positive"
        if kind == "null":
            return None
        limit = schema.get("maxLength")
        return self.text[:limit] if isinstance(limit, int) else self.text

    def _numeric(self, kind: str, schema: dict[str, Any], path: str) -> int | float:
        """A value inside the schema's bounds (1..5 when it names none)."""
        step = 1 if kind == "integer" else 0.001
        lo = _bound(schema, "minimum", "exclusiveMinimum", step)
        hi = _bound(schema, "maximum", "exclusiveMaximum", -step)
        low = lo if lo is not None else (hi - 4 if hi is not None else 1)
        high = hi if hi is not None else low + 4
        pick = _number(self.digest, path)
        if kind == "integer":
            first, last = math.ceil(low), math.floor(high)
            return first + pick % (last - first + 1) if last >= first else first
        return round(low + (high - low) * (pick % 1001) / 1000, 3)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, step: float) -> float | None:
    value, beyond = schema.get(inclusive), schema.get(exclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(beyond, int | float) and not isinstance(beyond, bool):
        return beyond + step
    return None


def build_answer(schema: dict[str, Any], sentiment: str, text: str, digest: str) -> dict[str, Any]:
    """The object a well-behaved model gives; `{}` schemas (json_object) get sentiment + text."""
    if not schema:
        return {"sentiment": sentiment, "answer": text}
    value = _Builder(schema, sentiment, text, digest).value(schema, "$", top=True)
    return value if isinstance(value, dict) else {"answer": value}


def broken_answer(schema: dict[str, Any], answer: dict[str, Any], sentiment: str, digest: str) -> str:
    """Content that does not fit `schema`: prose, or JSON with a value outside an enum or a
    required field left out (alternating by digest); prose whenever the schema can't be broken."""
    prose = f"I think it is {sentiment}."
    if _number(digest, "broken") % 2 == 0:
        return prose
    builder = _Builder(schema, sentiment, "", digest)
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for name, sub in (properties or {}).items():
        resolved = builder.resolve(sub)
        choices = resolved.get("enum") if isinstance(resolved, dict) else None
        if isinstance(choices, list) and name in answer:
            outside = "unexpected"
            while outside in choices:
                outside += "_"
            return dumps({**answer, name: outside})
    required = schema.get("required")
    if isinstance(required, list) and required and required[0] in answer:
        return dumps({k: v for k, v in answer.items() if k != required[0]})
    return prose
