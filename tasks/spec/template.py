"""Prompt templates: Jinja syntax in a sandbox, rendered column-wise by Arrow when the
template is plain `{{ column }}` substitution (the common case), row-wise otherwise.

Cell values are data: they are substituted once and never rendered again, so a review
containing `{{ secret }}` is sent literally.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from tasks.infra.errors import InputError

_MAX_REPEAT = 100_000  # "x" * n and friends: a template must not exhaust memory


class _Sandbox(SandboxedEnvironment):
    """The sandbox, plus a bound on `*` and no `**`, which Jinja's sandbox leaves open."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the ** operator is not allowed in prompt templates")
        sized = any(isinstance(v, str | list | tuple) for v in (left, right))
        if sized and any(isinstance(v, int) and abs(v) > _MAX_REPEAT for v in (left, right)):
            raise SecurityError(f"repeating text more than {_MAX_REPEAT} times is not allowed")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_JINJA_MARKUP = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")


class PromptTemplate:
    """A parsed prompt template; raises ValueError for a template that does not parse."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._ast = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template does not parse (line {exc.lineno}): {exc.message}") from None

    @cached_property
    def columns(self) -> list[str]:
        """Columns the template reads, in order of first appearance."""
        names = meta.find_undeclared_variables(self._ast)
        ordered = [m.group(1) for m in _PLACEHOLDER.finditer(self.source) if m.group(1) in names]
        return list(dict.fromkeys(ordered + sorted(names - set(ordered))))

    @cached_property
    def simple_parts(self) -> list[str] | None:
        """[text, column, text, column, ..., text] for pure substitution, else None."""
        parts = _PLACEHOLDER.split(self.source)
        literals = parts[0::2]
        if any(_JINJA_MARKUP.search(text) for text in literals):
            return None
        return parts

    def check_schema(self, schema: pa.Schema, source: str) -> None:
        """Every placeholder names a column holding scalars; errors name the column."""
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise InputError(
                f"{source}: the prompt template uses column(s) {', '.join(map(repr, missing))} "
                f"which the table lacks. Columns present: {', '.join(schema.names)}"
            )
        for name in self.columns:
            kind = schema.field(name).type
            if pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
                raise InputError(
                    f"{source}: column {name!r} has type {kind}, which a prompt cannot hold as text; "
                    "flatten it to a string column first"
                )

    def render(self, batch: pa.RecordBatch) -> pa.Array:
        """One rendered prompt per row; nulls render as empty text."""
        texts = {name: _as_text(batch.column(name)) for name in self.columns}
        parts = self.simple_parts
        if parts is not None:
            if len(parts) == 1:
                return pa.array([parts[0]] * batch.num_rows, type=pa.string())
            pieces = [texts[p] if i % 2 else p for i, p in enumerate(parts)]
            return pc.binary_join_element_wise(*pieces, "")
        compiled = _ENV.from_string(self.source)
        columns = {name: texts[name].to_pylist() for name in self.columns}
        rendered = []
        for row in range(batch.num_rows):
            try:
                rendered.append(compiled.render({name: values[row] for name, values in columns.items()}))
            except Exception as exc:  # an untrusted template: any failure is the template's
                raise InputError(
                    f"the prompt template failed on row {row + 1} of a block of {batch.num_rows}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        return pa.array(rendered, type=pa.string())


def _as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column.cast(pa.string()), "")
