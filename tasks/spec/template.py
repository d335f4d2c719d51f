"""Prompt templates: Jinja syntax in a sandbox, rendered column-wise by Arrow when the
template is plain `{{ column }}` / `{{ row["a column"] }}` substitution (the common case),
row-wise otherwise.

Cell values are data: they are substituted once and never rendered again, so a review
containing `{{ secret }}` is sent literally.

A template may come from anyone who can drop a job into the inbox, so the row-wise path
runs under hard limits (see `_Budget`): nothing of the template runs while it compiles,
every operation that can make a large value is sized before it runs, the values a row
makes, its rendered prompt and its time are bounded, and only an allow-list of globals,
filters and methods exists. `tasks.spec.template_check` renders a sample in a process
that can be killed, for what no in-process limit can stop.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
import time
from _string import formatter_field_name_split
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context

from tasks.infra.errors import InputError

# -- the limits (stated in the README's job section) --------------------------------------
TEMPLATE_GROWTH_CHARS = 1_000_000  # a row's prompt: at most this many characters beyond its cells
WORK_FACTOR = 10  # all the values a row makes, summed: at most 10x its prompt limit
ROW_SECONDS = 1.0  # time to render one row
MAX_RANGE = 10_000  # numbers in one range()
_MAX_REPEAT = 100_000  # "x" * n and friends
_MAX_INT_BITS = 4_096  # an integer product; ** is refused
_ITEM_UNITS = 8  # a list item made counts as 8 characters towards WORK_FACTOR
_ROW = "row"  # the mapping of the row's columns: {{ row["unit price"] }}


class TemplateLimitError(SecurityError):
    """A template went over one of the limits above."""


@dataclass(frozen=True)
class RenderLimits:
    growth_chars: int = TEMPLATE_GROWTH_CHARS
    row_seconds: float = ROW_SECONDS


class _Budget:
    """What one row may still spend; the sandbox's hooks charge it."""

    __slots__ = ("deadline", "limits", "spent", "value_cap", "work_cap")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.start_row(0)

    def start_row(self, own_chars: int) -> None:
        self.value_cap = self.limits.growth_chars + own_chars
        self.work_cap = WORK_FACTOR * self.value_cap
        self.spent = 0
        self.deadline = time.monotonic() + self.limits.row_seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering one row took longer than {self.limits.row_seconds:g} s")

    def make(self, size: int, what: str) -> None:
        """A value of `size` characters (items for a list) is about to be made: it must fit,
        and it counts towards what the row spends."""
        self.allow(size, what)
        self.spend(size)

    def allow(self, size: int, what: str) -> None:
        """A value of `size` characters is about to be made or read whole as text: it must fit."""
        if size > self.value_cap:
            raise TemplateLimitError(
                f"{what} would make a value of {size:,} characters; a value may hold at most "
                f"{self.value_cap:,} for this row ({self.limits.growth_chars:,} plus the row's own text)"
            )

    def spend(self, units: int) -> None:
        """Count what a made value costs (see `_made`) towards the row's total."""
        self.spent += units
        if self.spent > self.work_cap:
            raise TemplateLimitError(
                f"the template made more than {self.work_cap:,} characters of values for one row "
                f"({WORK_FACTOR}x the limit of a value; a list item counts as {_ITEM_UNITS})"
            )


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # compile time: constant folding must not run template code
        raise TemplateLimitError("template code runs only while a row is rendered")
    return budget


def _size(value: Any, limit: int) -> int:
    """About how many characters `value` makes as text (items for a list); stops past `limit`,
    so a value built of references to itself costs no more than the limit to measure."""
    if type(value) is str:
        return len(value)
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, ItemsView):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(chain.from_iterable(item))
        elif isinstance(item, list | tuple | AbstractSet | ValuesView):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 24
        if total > limit:
            return total
    return total


def _made(value: Any) -> int:
    """What making `value` cost: its characters, or `_ITEM_UNITS` per item of a container (a
    reference, often a new small object) without counting the items' contents again."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | Mapping | AbstractSet):
        return _ITEM_UNITS * len(value)
    return 1


# -- sizes of the operations that grow ------------------------------------------------------
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?(?P<kind>.)",
    re.DOTALL,
)
_DIGITS = re.compile(r"\d+")


def _percent_size(fmt: str, values: Any, limit: int) -> int:
    """Size of `fmt % values`, widths and precisions included, before it is made."""
    total = len(fmt)
    position = 0
    for spec in _PERCENT_SPEC.finditer(fmt):
        if spec["kind"] == "%":
            continue
        if spec["width"] == "*" or spec["precision"] == "*":
            raise SecurityError("a * width or precision is not allowed in % formatting")
        total += int(spec["width"] or 0) + int(spec["precision"] or 0)
        if spec["key"] is not None and isinstance(values, Mapping):
            argument = values.get(spec["key"])
        elif isinstance(values, tuple):
            argument = values[position] if position < len(values) else None
            position += 1
        else:
            argument = values
        factor = 10 if spec["kind"] in "ra" else 1  # repr escapes
        total += factor * _size(argument, limit)
        if total > limit:
            break
    return total


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int) -> int:
    """Size of `fmt.format(*args, **kwargs)` before it is made."""
    total = 0
    auto = 0
    for literal, field, spec, conversion in string.Formatter().parse(fmt):
        total += len(literal)
        if field is None:
            continue
        if "{" in (spec or ""):
            raise SecurityError("nested {} inside a format field is not allowed")
        first, _rest = formatter_field_name_split(field)
        if first == "":
            first, auto = auto, auto + 1
        if isinstance(first, int):
            argument = args[first] if first < len(args) else None
        else:
            argument = kwargs.get(first)
        factor = 10 if conversion in ("r", "a") else 1
        total += factor * _size(argument, limit) + sum(int(d) for d in _DIGITS.findall(spec or ""))
        if total > limit:
            break
    return total


def _replace_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(text)  # str.replace raises its own TypeError
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _replace_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    old = args[0] if args else kwargs.get("old")
    new = args[1] if len(args) > 1 else kwargs.get("new")
    return old, new, args[2] if len(args) > 2 else kwargs.get("count", -1)


def _width(value: Any) -> int:
    return value if isinstance(value, int) else 0


# Methods of text a template may call, with the size of their result where it can grow.
_STR_GROWTH: dict[str, Callable[[str, tuple[Any, ...], dict[str, Any], int], int]] = {
    "center": lambda s, a, k, _: max(len(s), _width(a[0] if a else k.get("width"))),
    "ljust": lambda s, a, k, _: max(len(s), _width(a[0] if a else k.get("width"))),
    "rjust": lambda s, a, k, _: max(len(s), _width(a[0] if a else k.get("width"))),
    "zfill": lambda s, a, k, _: max(len(s), _width(a[0] if a else k.get("width"))),
    "expandtabs": lambda s, a, k, _: len(s) + s.count("\t") * _width(a[0] if a else k.get("tabsize", 8)),
    "replace": lambda s, a, k, _: _replace_size(s, *_replace_args(a, k)),
    "format": lambda s, a, k, limit: _format_size(s, a, k, limit),
    "format_map": lambda s, a, k, limit: _format_size(s, (), a[0] if a else {}, limit),
}
_STR_METHODS = frozenset(_STR_GROWTH) | {
    "join",
    "capitalize",
    "casefold",
    "count",
    "endswith",
    "find",
    "index",
    "isalnum",
    "isalpha",
    "isascii",
    "isdecimal",
    "isdigit",
    "isidentifier",
    "islower",
    "isnumeric",
    "isprintable",
    "isspace",
    "istitle",
    "isupper",
    "lower",
    "lstrip",
    "partition",
    "removeprefix",
    "removesuffix",
    "rfind",
    "rindex",
    "rpartition",
    "rsplit",
    "rstrip",
    "split",
    "splitlines",
    "startswith",
    "strip",
    "swapcase",
    "title",
    "upper",
}
_SEQUENCE_METHODS = frozenset({"index", "count"})
_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})


# -- filters: an allow-list, each bounded ------------------------------------------------
def _join_size(arguments: dict[str, Any], limit: int) -> int:
    parts = arguments["value"]
    separator = arguments.get("d") or ""
    return len(separator) * max(len(parts) - 1, 0) + sum(_size(p, limit) for p in parts)


def _tojson_size(arguments: dict[str, Any], limit: int) -> int:
    indent = arguments.get("indent") or 0
    if not isinstance(indent, int) or indent > 8:
        raise SecurityError("tojson indent may be at most 8")
    return 6 * _size(arguments["value"], limit) * (1 + indent)


def _indent_size(arguments: dict[str, Any], limit: int) -> int:
    text = str(arguments["value"])
    width = arguments.get("width", 4)
    prefix = len(width) if isinstance(width, str) else _width(width)
    return len(text) + (text.count("\n") + 1) * prefix


def _wordwrap_size(arguments: dict[str, Any], limit: int) -> int:
    text = str(arguments["value"])
    wrap = arguments.get("wrapstring")
    return len(text) * (1 + len(wrap if isinstance(wrap, str) else "\n"))


def _format_filter_size(arguments: dict[str, Any], limit: int) -> int:
    args, kwargs = arguments.get("args") or (), arguments.get("kwargs") or {}
    return _percent_size(str(arguments["value"]), kwargs or args, limit)


def _items(value: Any, limit: int) -> int:
    return _size(value, limit) if isinstance(value, Iterable) else 1


# Filters that can make more than they read, with the size of what they make.
_FILTER_GROWTH: dict[str, Callable[[dict[str, Any], int], int]] = {
    "center": lambda a, _: max(len(str(a["value"])), _width(a.get("width", 80))),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "replace": lambda a, _: _replace_size(str(a["value"]), a.get("old"), a.get("new"), a.get("count")),
    "format": _format_filter_size,
    "join": _join_size,
    "tojson": _tojson_size,
    "batch": lambda a, limit: (
        _items(a["value"], limit) + (_width(a.get("linecount")) if a.get("fill_with") is not None else 0)
    ),
    "slice": lambda a, limit: _items(a["value"], limit) + _width(a.get("slices")),
    "sum": lambda a, limit: _size(a["value"], limit) + _size(a.get("start"), limit),
}
# Not offered: pprint, random (not repeatable: the row cache keys on the prompt), striptags and
# urlize (regular expressions that backtrack on crafted text), xmlattr (HTML only).
_DROPPED_FILTERS = frozenset({"pprint", "random", "striptags", "urlize", "xmlattr"})
_MATERIALIZED = frozenset({"join"})
# Filters that work on the structure of their input, never its text (the rest read it as text).
_STRUCTURE_FILTERS = frozenset(
    {"abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "groupby", "items", "join", "last"}
    | {"length", "list", "map", "max", "min", "reject", "rejectattr", "reverse", "round", "select"}
    | {"selectattr", "slice", "sort", "sum", "unique"}
)


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    passes = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    growth = _FILTER_GROWTH.get(name)
    signature = inspect.signature(func) if growth is not None else None
    value_name = list(signature.parameters)[passes] if signature is not None else ""
    materialize = name in _MATERIALIZED
    reads_text = name not in _STRUCTURE_FILTERS

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if materialize and len(args) > passes and not isinstance(args[passes], list | tuple):
            args = (*args[:passes], list(args[passes]), *args[passes + 1 :])
        if len(args) > passes + 1 or kwargs:
            for extra in (*args[passes + 1 :], *kwargs.values()):
                if (
                    isinstance(extra, int | float)
                    and not isinstance(extra, bool)
                    and abs(extra) > budget.value_cap
                ):
                    raise TemplateLimitError(f"the {name} filter's argument {extra!r} is too large")
        if reads_text and len(args) > passes:  # its input is read as text: it must fit
            budget.allow(_size(args[passes], budget.value_cap + 1), f"the {name} filter")
        if growth is not None and signature is not None:
            bound = signature.bind(*args, **kwargs)
            arguments = dict(bound.arguments)
            arguments["value"] = arguments.get(value_name)
            budget.make(growth(arguments, budget.value_cap + 1), f"the {name} filter")
            return func(*args, **kwargs)
        result = func(*args, **kwargs)
        budget.spend(_made(result))
        return result

    return guarded


def _bounded_range(*args: Any) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(
            f"range() of more than {MAX_RANGE} numbers is not allowed in prompt templates"
        )
    return numbers


class _BoundedIter:
    """What a template's `for` loops over: each step checks the row's time."""

    __slots__ = ("_budget", "_iterator", "_source")

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._budget = _budget()
        self._source = iterable
        self._iterator = iter(iterable)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._budget.tick()
        return next(self._iterator)

    def __len__(self) -> int:
        return len(self._source)  # type: ignore[arg-type]  # TypeError: LoopContext counts instead


@pass_context
def _finalize(_context: Any, value: Any) -> Any:
    """Every piece of output, literal text included, is charged before it is made into text."""
    budget = _budget()
    budget.tick()
    size = len(value) if type(value) is str else _size(value, budget.value_cap + 1)
    if size > budget.value_cap or budget.spent + size > budget.work_cap:
        budget.make(size, "the output")  # raises, naming the limit
    budget.spent += size
    return value


def _bounded_concat(parts: tuple[Any, ...], autoescape: bool) -> str:
    budget = _budget()
    budget.tick()
    budget.make(sum(_size(p, budget.value_cap + 1) for p in parts), "the ~ operator")
    return markup_join(parts) if autoescape else str_join(parts)


class _Generator(CodeGenerator):
    """`~` goes through the budget (Jinja joins it inline otherwise)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 (Jinja's name)
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox (no Python internals, no mutation), plus bounds on size and time."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _Generator

    def __init__(self) -> None:
        super().__init__(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize
        )
        self.globals = {"range": _bounded_range, "dict": dict}
        self.filters = {
            name: _bounded_filter(name, func)
            for name, func in FILTERS.items()
            if name not in _DROPPED_FILTERS
        }
        self.bounded_concat = _bounded_concat
        self.bounded_iter = _BoundedIter

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for output in tree.find_all(nodes.Output):  # literal text is output too: charge it
            output.nodes = [
                nodes.Const(child.data, lineno=child.lineno)
                if isinstance(child, nodes.TemplateData)
                else child
                for child in output.nodes
            ]
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("bounded_iter"), [loop.iter], [], None, None, lineno=loop.lineno
            )
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in _STR_METHODS
        if isinstance(obj, int | float | complex | bytes):
            return False  # int.to_bytes(10**9) and friends
        if isinstance(obj, list | tuple):
            return attr in _SEQUENCE_METHODS
        if isinstance(obj, dict):
            return attr in _MAPPING_METHODS
        return True

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "**":
            raise SecurityError("the ** operator is not allowed in prompt templates")
        limit = budget.value_cap + 1
        if operator == "*":
            sequence, count = (right, left) if isinstance(left, int) else (left, right)
            if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                if abs(count) > _MAX_REPEAT:
                    raise SecurityError(f"repeating text more than {_MAX_REPEAT} times is not allowed")
                budget.make(len(sequence) * max(count, 0), "the * operator")
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > _MAX_INT_BITS
            ):
                raise TemplateLimitError(f"a product of more than {_MAX_INT_BITS} bits is not allowed")
        elif (
            operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
        ):
            budget.make(len(left) + len(right), "the + operator")
        elif operator == "%" and isinstance(left, str):
            budget.make(_percent_size(left, right, limit), "% formatting")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        text = getattr(obj, "__self__", None)
        if not isinstance(text, str):
            text = getattr(getattr(obj, "__wrapped__", None), "__self__", None)  # the sandbox's str.format
        if isinstance(text, str) and isinstance(getattr(obj, "__name__", None), str):
            return super().call(context, self._text_method(text, obj.__name__), *args, **kwargs)
        if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_BoundedIter(args[0]), *args[1:])
        result = super().call(context, obj, *args, **kwargs)
        budget.spend(_made(result))
        return result

    def _text_method(self, text: str, name: str) -> Callable[..., Any]:
        """A method of text, allow-listed, its result sized before it is made."""
        if name not in _STR_METHODS:
            raise SecurityError(f"the text method {name}() is not available in prompt templates")
        method = getattr(text, name)
        method = self.wrap_str_format(method) or method  # format fields go through the sandbox
        growth = _STR_GROWTH.get(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            budget = _budget()
            limit = budget.value_cap + 1
            if name == "join":  # the parts, measured before they are joined
                parts = list(args[0]) if args else []
                size = len(text) * max(len(parts) - 1, 0) + sum(_size(p, limit) for p in parts)
                budget.make(size, "join()")
                return method(parts, *args[1:], **kwargs)
            if growth is not None:
                budget.make(growth(text, args, kwargs, limit), f"{name}()")
                return method(*args, **kwargs)
            budget.allow(len(text), f"{name}()")
            result = method(*args, **kwargs)
            budget.spend(_made(result))
            return result

        return call


_ENV = _Sandbox()
# Names a template cannot use for a column: the row mapping, Jinja's `self`, the globals.
RESERVED_NAMES = frozenset({_ROW, "self", *_ENV.globals})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(
    r"\{\{\s*(?:(?P<name>" + _NAME + r")|row\[\s*(?:\"(?P<dq>[^\"\\]*)\"|'(?P<sq>[^'\\]*)')\s*\])\s*\}\}"
)
_JINJA_MARKUP = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")


def _placeholder_column(match: re.Match[str]) -> str:
    name = match["name"]
    if name is not None:
        return name
    return match["dq"] if match["dq"] is not None else match["sq"]


class PromptTemplate:
    """A parsed prompt template; raises ValueError for a template that does not parse or
    that uses a name in a way it cannot mean."""

    def __init__(self, source: str, limits: RenderLimits | None = None) -> None:
        self.source = source
        self.limits = limits or RenderLimits()
        try:
            self._ast = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template does not parse (line {exc.lineno}): {exc.message}") from None
        except (RecursionError, MemoryError):
            raise ValueError("template does not parse: it is nested too deeply") from None
        _check_names(self._ast)
        if self.simple_parts is None:  # compiling finds unknown filters and tests
            try:
                _ = self._compiled
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"template does not compile (line {exc.lineno}): {exc.message}") from None
            except (RecursionError, MemoryError):
                raise ValueError("template does not compile: it is nested too deeply") from None

    @cached_property
    def _bare_names(self) -> set[str]:
        return meta.find_undeclared_variables(self._ast) - {_ROW}

    @cached_property
    def _row_columns(self) -> list[str]:
        found = []
        for item in self._ast.find_all(nodes.Getitem):
            if (
                isinstance(item.node, nodes.Name)
                and item.node.name == _ROW
                and isinstance(item.arg, nodes.Const)
            ):
                found.append(str(item.arg.value))
        return found

    @cached_property
    def columns(self) -> list[str]:
        """Columns the template reads, in order of first appearance."""
        names = self._bare_names | set(self._row_columns)
        ordered = [c for c in map(_placeholder_column, _PLACEHOLDER.finditer(self.source)) if c in names]
        return list(dict.fromkeys(ordered + sorted(names - set(ordered))))

    @cached_property
    def simple_parts(self) -> list[str] | None:
        """[text, column, text, column, ..., text] for pure substitution, else None."""
        parts: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(self.source):
            column = _placeholder_column(match)
            if match["name"] is not None and column not in self._bare_names:
                return None  # `{{ none }}` and the like: Jinja's own name, not a column
            parts += [self.source[position : match.start()], column]
            position = match.end()
        parts.append(self.source[position:])
        if any(_JINJA_MARKUP.search(text) for text in parts[0::2]):
            return None
        return parts

    @cached_property
    def _compiled(self) -> jinja2.Template:
        return _ENV.from_string(self.source)  # outside any budget: no template code runs here

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
        texts = {name: as_text(batch.column(name)) for name in self.columns}
        parts = self.simple_parts
        if parts is not None:
            if len(parts) == 1:
                return pa.array([parts[0]] * batch.num_rows, type=pa.string())
            pieces = [texts[p] if i % 2 else p for i, p in enumerate(parts)]
            return pc.binary_join_element_wise(*pieces, "")
        own_chars = np.zeros(batch.num_rows, dtype=np.int64)
        for text in texts.values():
            own_chars += pc.utf8_length(text).to_numpy(zero_copy_only=False)
        columns = {name: text.to_pylist() for name, text in texts.items()}
        return pa.array(self.render_rows(columns, batch.num_rows, own_chars.tolist()), type=pa.string())

    def render_rows(
        self, columns: Mapping[str, list[str]], rows: int, own_chars: list[int] | None = None
    ) -> list[str]:
        """The row-wise path, on the template's columns as lists of text (nulls as ""), under the
        limits: `own_chars[i]` is the length of row i's cells (measured here when not given)."""
        compiled = self._compiled
        bare = [name for name in self.columns if name in self._bare_names]
        by_name = list(dict.fromkeys(self._row_columns))
        budget = _Budget(self.limits)
        token = _BUDGET.set(budget)
        rendered = []
        try:
            for row in range(rows):
                context: dict[str, Any] = {name: columns[name][row] for name in bare}
                if by_name:
                    context[_ROW] = {name: columns[name][row] for name in by_name}
                own = own_chars[row] if own_chars is not None else sum(len(c[row]) for c in columns.values())
                budget.start_row(own)
                try:
                    rendered.append(_render_row(compiled, context, budget))
                except Exception as exc:  # an untrusted template: any failure is the template's
                    detail = str(exc) or ("it ran out of memory" if isinstance(exc, MemoryError) else "")
                    raise InputError(
                        f"the prompt template failed on row {row + 1} of a block of {rows}: "
                        f"{type(exc).__name__}: {detail}"
                    ) from None
        finally:
            _BUDGET.reset(token)
        return rendered


def _render_row(compiled: jinja2.Template, context: dict[str, Any], budget: _Budget) -> str:
    pieces = []
    total = 0
    limit = budget.value_cap
    for piece in compiled.generate(context):
        total += len(piece)
        if total > limit:
            raise TemplateLimitError(
                f"the rendered prompt is longer than {limit:,} characters "
                f"({budget.limits.growth_chars:,} plus the row's own text)"
            )
        pieces.append(piece)
    return "".join(pieces)


def _check_names(tree: nodes.Template) -> None:
    """`row` only as row["name"]; `{{ range }}`-like outputs name no column; no other files."""
    if any(True for _ in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))):
        raise ValueError("a prompt template cannot extend, include or import other templates")
    uses = [n for n in tree.find_all(nodes.Name) if n.name == _ROW]
    if any(n.ctx != "load" for n in uses):
        raise ValueError(
            f'`{_ROW}` holds the row\'s columns ({_ROW}["name"]); use another name for a variable'
        )
    by_name = [
        item
        for item in tree.find_all(nodes.Getitem)
        if isinstance(item.node, nodes.Name)
        and item.node.name == _ROW
        and isinstance(item.arg, nodes.Const)
        and isinstance(item.arg.value, str)
    ]
    if len(by_name) != len(uses):
        raise ValueError(
            f'`{_ROW}` reads a column by its name in quotes, e.g. {{{{ {_ROW}["unit price"] }}}}; '
            f"{_ROW}.name, {_ROW}[variable] and a bare {_ROW} are not supported"
        )
    for output in tree.find_all(nodes.Output):
        for child in output.nodes:
            if isinstance(child, nodes.Name) and child.name in RESERVED_NAMES:
                raise ValueError(
                    f"{{{{ {child.name} }}}} does not read a column: `{child.name}` is a name of the "
                    f'template language; write {{{{ {_ROW}["{child.name}"] }}}} for the column of that name'
                )


def as_text(column: pa.Array) -> pa.Array:
    """A column as text, nulls as empty text: what a template sees."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column.cast(pa.string()), "")
