"""The cost columns of the output, vectorized over Arrow columns (the join calls these per chunk).

Per record (one attempt of one row), two figures: the catalog's estimate (its prices for the
run's model and mode x the record's tokens) and the bill, which is the service's own figure
where it gives one (xAI's `cost_in_usd_ticks`, "the actual amount billed, after all
applicable discounts") and the estimate where it gives none (OpenAI's protocol).
"""

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
        """The catalog's estimate per record (null: no usage, or no prices for the model)."""
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

    def billed(self, outcomes: pa.Table) -> pa.Array:
        """The bill per record: the service's figure where it gives one, else the estimate."""
        return pc.coalesce(outcomes.column("service_cost_usd"), self.at_prices(outcomes))

    def saved(self, outcomes: pa.Table) -> float:
        """What the cached rows would have cost had they been sent (catalog prices)."""
        cached = outcomes.filter(outcomes.column("from_cache"))
        return float(pc.sum(self.at_prices(cached)).as_py() or 0.0) if cached.num_rows else 0.0
