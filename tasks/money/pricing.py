"""Usage semantics and cost arithmetic, in one place.

The providers count tokens differently (reference xai-batch-api.md §2.1, §4): xAI's
`completion_tokens` EXCLUDES reasoning tokens, OpenAI's INCLUDES them; both count cached
tokens inside `prompt_tokens`. `Usage` holds one provider-neutral reading so that a cost is
never computed from a misread field, and every cost here (per row, per column, estimate) runs
through the same arithmetic:

    cost = ((prompt - cached) * input + cached * cached_input + (output + reasoning) * output) / 1e6

with the batch prices in batch mode and the long-context prices when the prompt reaches the
model's long-context threshold (the whole request is then billed at those prices).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from tasks.money.catalog import ModelInfo, load_catalog

PER_TOKENS = 1_000_000  # catalog prices are USD per this many tokens
TICK_USD = 1e-10  # xAI's `cost_in_usd_ticks` unit
_TICKS_PER_USD = 10_000_000_000  # divide by an exact integer: 1e-10 itself is not exact in binary
# Below this many USD, two sums count as equal whatever their ratio: the service rounds each
# row to whole ticks, and tiny totals differ by large ratios from rounding alone.
COST_ABS_FLOOR_USD = 1e-6


def _count(value: Any) -> int:
    """A token count from a usage field: missing, null, negative or non-numeric reads as 0."""
    if type(value) is int:  # the common case first: this runs for every row of a batch
        return value if value > 0 else 0
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value):
        return max(int(value), 0)
    return 0


def _details(usage: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = usage.get(key)
        if type(value) is dict or isinstance(value, Mapping):  # the ABC check is slow
            return value
    return {}


def _first(usage: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if usage.get(key) is not None:
            return usage[key]
    return None


class Usage(NamedTuple):  # a tuple: built for every result row, ~4x cheaper than a frozen dataclass
    """Tokens of one request, provider-neutral.

    prompt_tokens includes cached_tokens; output_tokens is the visible completion and
    EXCLUDES reasoning_tokens. Both output and reasoning are billed at the output price.
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_xai(cls, usage: Mapping[str, Any] | None) -> Usage:
        """From an xAI `usage` object, whose completion_tokens excludes reasoning (the reference
        example: 706 prompt + 22 completion + 99 reasoning = 827 total). Missing fields read 0.
        The Responses-API names (input_tokens, output_tokens, *_details) are read as well."""
        usage = usage or {}
        return cls(
            prompt_tokens=_count(_first(usage, "prompt_tokens", "input_tokens")),
            cached_tokens=_count(
                _details(usage, "prompt_tokens_details", "input_tokens_details").get("cached_tokens")
            ),
            output_tokens=_count(_first(usage, "completion_tokens", "output_tokens")),
            reasoning_tokens=_count(
                _details(usage, "completion_tokens_details", "output_tokens_details").get("reasoning_tokens")
            ),
        )

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage:
        """From an OpenAI `usage` object, whose completion_tokens (or Responses-API
        output_tokens) INCLUDES reasoning: the visible output is completion - reasoning,
        clamped at 0 should a service report more reasoning than completion."""
        usage = usage or {}
        completion = _count(_first(usage, "completion_tokens", "output_tokens"))
        reasoning = _count(
            _details(usage, "completion_tokens_details", "output_tokens_details").get("reasoning_tokens")
        )
        return cls(
            prompt_tokens=_count(_first(usage, "prompt_tokens", "input_tokens")),
            cached_tokens=_count(
                _details(usage, "prompt_tokens_details", "input_tokens_details").get("cached_tokens")
            ),
            output_tokens=max(completion - reasoning, 0),
            reasoning_tokens=reasoning,
        )


@dataclass(frozen=True)
class Prices:
    """USD per 1M tokens for each billed token type."""

    input: float
    cached_input: float
    output: float

    @classmethod
    def from_mapping(cls, prices: Mapping[str, float]) -> Prices:
        return cls(input=prices["input"], cached_input=prices["cached_input"], output=prices["output"])

    def discounted(self, discount: float) -> Prices:
        """These prices with `discount` (a fraction) taken off every token type."""
        keep = 1.0 - discount
        # Rounded to 1e-10 USD per 1M tokens so that 0.20 * 0.8 reads 0.16 in reports, not
        # 0.16000000000000003; far below any price step.
        return Prices(
            round(self.input * keep, 10), round(self.cached_input * keep, 10), round(self.output * keep, 10)
        )


@dataclass(frozen=True)
class PriceSheet:
    """Everything needed to price a request of one model: standard and batch prices, and the
    long-context tier (threshold in prompt tokens) when the model has one."""

    model: str
    provider: str
    standard: Prices
    batch: Prices
    long_context_threshold: int | None = None
    long_standard: Prices | None = None
    long_batch: Prices | None = None
    source: str = ""
    as_of: str = ""

    @classmethod
    def from_model_info(cls, info: ModelInfo) -> PriceSheet:
        """Batch long-context prices, unless the catalog gives them, take the same cut as the
        model's batch prices: the flat discount, or per token type batch/standard."""
        standard = Prices.from_mapping(info.prices)
        if info.batch_prices is not None:
            batch = Prices.from_mapping(info.batch_prices)
        else:
            batch = standard.discounted(info.batch_discount or 0.0)
        long = info.long_context
        if long is None:
            return cls(info.name, info.provider, standard, batch, source=info.source, as_of=info.as_of)
        long_standard = Prices.from_mapping(long.prices)
        if long.batch_prices is not None:
            long_batch = Prices.from_mapping(long.batch_prices)
        elif info.batch_prices is None:
            long_batch = long_standard.discounted(info.batch_discount or 0.0)
        else:
            long_batch = Prices(
                *(
                    round(
                        getattr(long_standard, key) * _ratio(getattr(batch, key), getattr(standard, key)), 10
                    )
                    for key in ("input", "cached_input", "output")
                )
            )
        return cls(
            info.name,
            info.provider,
            standard,
            batch,
            long_context_threshold=long.threshold,
            long_standard=long_standard,
            long_batch=long_batch,
            source=info.source,
            as_of=info.as_of,
        )

    def prices(self, *, batch: bool, long_context: bool = False) -> Prices:
        """The prices that apply in this mode and tier."""
        if long_context and self.long_standard is not None and self.long_batch is not None:
            return self.long_batch if batch else self.long_standard
        return self.batch if batch else self.standard

    def is_long(self, prompt_tokens: int) -> bool:
        """Whether a prompt this long is billed at the long-context prices."""
        return self.long_context_threshold is not None and prompt_tokens >= self.long_context_threshold


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 1.0


def price_sheet(model: str, catalog: Path | None = None) -> PriceSheet | None:
    """The price sheet of `model` from the catalog (see tasks.money.catalog.catalog_path), or None
    for a model the catalog does not list."""
    info = load_catalog(catalog).get(model)
    return None if info is None else PriceSheet.from_model_info(info)


def cost_usd(usage: Usage, sheet: PriceSheet, *, batch: bool) -> float:
    """USD for one request. Cached tokens beyond the prompt (inconsistent data) are billed as
    cached and no uncached input is billed."""
    p = sheet.prices(batch=batch, long_context=sheet.is_long(usage.prompt_tokens))
    uncached = max(usage.prompt_tokens - usage.cached_tokens, 0)
    billed_output = usage.output_tokens + usage.reasoning_tokens
    # Same operations, in the same order, as cost_column: the two agree bit for bit.
    return (
        float(uncached) * p.input
        + float(usage.cached_tokens) * p.cached_input
        + float(billed_output) * p.output
    ) / PER_TOKENS


ArrayLike: TypeAlias = pa.Array | pa.ChunkedArray


def cost_column(
    prompt: ArrayLike,
    cached: ArrayLike,
    output: ArrayLike,
    reasoning: ArrayLike,
    sheet: PriceSheet,
    *,
    batch: bool,
) -> ArrayLike:
    """cost_usd over whole columns with pyarrow.compute (no Python loop: millions of rows).

    Token columns are integer (int64) and may hold nulls. A null prompt or output means the
    row has no usage (it failed), so its cost is null. A null cached or reasoning count means
    the service left out the details object, read as 0 like Usage does. Returns float64
    (chunked if the input was chunked); equals cost_usd row by row.
    """
    f64 = pa.float64()
    prompt_f = pc.cast(prompt, f64)
    cached_f = pc.fill_null(pc.cast(cached, f64), 0.0)
    billed_output = pc.add(pc.cast(output, f64), pc.fill_null(pc.cast(reasoning, f64), 0.0))
    # skip_nulls=False: a null prompt must stay null, not become max(null, 0) = 0.
    uncached = pc.max_element_wise(pc.subtract(prompt_f, cached_f), 0.0, skip_nulls=False)
    short = sheet.prices(batch=batch)
    long = sheet.prices(batch=batch, long_context=True)
    price_in: Any = short.input
    price_cached: Any = short.cached_input
    price_out: Any = short.output
    if sheet.long_context_threshold is not None and long != short:
        is_long = pc.greater_equal(prompt_f, float(sheet.long_context_threshold))
        price_in = pc.if_else(is_long, long.input, short.input)
        price_cached = pc.if_else(is_long, long.cached_input, short.cached_input)
        price_out = pc.if_else(is_long, long.output, short.output)
    total = pc.add(
        pc.add(pc.multiply(uncached, price_in), pc.multiply(cached_f, price_cached)),
        pc.multiply(billed_output, price_out),
    )
    return pc.divide(total, float(PER_TOKENS))


def estimate_cost(
    rows: int, input_tokens: float, output_tokens: float, sheet: PriceSheet, *, batch: bool
) -> float:
    """USD for `rows` requests of `input_tokens` prompt tokens and `output_tokens` billed
    output tokens (visible + reasoning) EACH, i.e. per-row figures, not totals: the
    long-context tier is decided per request. No cache hits are assumed, so this is an upper
    bound for prompts that share a prefix."""
    p = sheet.prices(batch=batch, long_context=sheet.is_long(math.ceil(input_tokens)))
    return rows * (input_tokens * p.input + output_tokens * p.output) / PER_TOKENS


def ticks_to_usd(ticks: float | None) -> float | None:
    """USD from xAI's `cost_in_usd_ticks` (1 tick = 1e-10 USD); None for a missing value."""
    if ticks is None or isinstance(ticks, bool) or not isinstance(ticks, int | float):
        return None
    return ticks / _TICKS_PER_USD


def costs_disagree(
    ours: float, service: float, tolerance: float = 0.01, abs_floor: float = COST_ABS_FLOOR_USD
) -> bool:
    """Whether the catalog's estimate and the service's bill differ by more than `tolerance`
    (relative to the larger) and by more than `abs_floor` USD. xAI's ticks are "the actual
    amount billed, after all applicable discounts": a gap means the catalog's prices or batch
    discount for the model are out of date (or the service bills something the catalog lacks)."""
    if not (math.isfinite(ours) and math.isfinite(service)):
        return True
    gap = abs(ours - service)
    return gap > abs_floor and gap > tolerance * max(abs(ours), abs(service))
