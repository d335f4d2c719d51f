"""The cost columns of the output: what each row cost at the catalog's prices for the run's
model and mode, vectorized over Arrow columns (the join calls these per chunk)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks.money.pricing import PriceSheet, cost_column


def sum_known(a: pa.Array, b: pa.Array) -> pa.Array:
    """a + b where a null counts as 0, unless both are null (nothing known: stays null)."""
    total = pc.add(pc.fill_null(a, 0.0), pc.fill_null(b, 0.0))
    return pc.if_else(pc.and_(pc.is_null(a), pc.is_null(b)), pa.scalar(None, pa.float64()), total)


@dataclass(frozen=True)
class Pricing:
    """What a row cost: catalog prices for the run's model and mode (None: not in the catalog)."""

    sheet: PriceSheet | None
    batch: bool

    def at_prices(self, outcomes: pa.Table) -> pa.Array:
        if self.sheet is None:
            return pa.nulls(outcomes.num_rows, pa.float64())
        column = outcomes.column
        return cost_column(
            column("prompt_tokens"),
            column("cached_tokens"),
            column("completion_tokens"),
            column("reasoning_tokens"),
            self.sheet,
            batch=self.batch,
        )

    def costs(self, outcomes: pa.Table, from_cache: pa.Array) -> pa.Array:
        """Per row: what this run paid (a cached answer costs nothing now)."""
        return pc.if_else(from_cache, 0.0, self.at_prices(outcomes))

    def saved(self, outcomes: pa.Table) -> float:
        """What the cached rows would have cost had they been sent."""
        cached = outcomes.filter(outcomes.column("from_cache"))
        return float(pc.sum(self.at_prices(cached)).as_py() or 0.0) if cached.num_rows else 0.0
