"""What a run will cost before anything is sent: rows, tokens, and cost at batch and
standard (sync) prices; and the budget check that refuses to submit above `max_cost_usd`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.infra.errors import InputError
from tasks.infra.run_layout import RunPlan
from tasks.money.catalog import model_info
from tasks.money.pricing import estimate_cost, price_sheet
from tasks.spec.job import JobSpec

ASSUMED_OUTPUT_TOKENS = 256  # per answer, when the job sets no max_tokens
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per message


def answer_tokens(params: Mapping[str, Any]) -> tuple[int, bool]:
    """Tokens one answer may take: the request's max_tokens (or max_completion_tokens), else
    ASSUMED_OUTPUT_TOKENS; the flag says it was assumed."""
    limit = params.get("max_tokens") or params.get("max_completion_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit, False
    return ASSUMED_OUTPUT_TOKENS, True


@dataclass(frozen=True)
class Estimate:
    model: str
    mode: str  # batch | sync, as the run will go
    rows: int
    rejected: int
    cached: int
    to_send: int
    prompt_tokens: int  # ~4 bytes a token; real tokenizers may count more
    output_tokens: int
    output_assumed: bool  # no max_tokens in the job: ASSUMED_OUTPUT_TOKENS per answer
    batch_usd: float | None  # None: the model has no prices in the catalog
    sync_usd: float | None
    batch_accepted: bool | None  # None: the model is not in the catalog

    @property
    def cost_usd(self) -> float | None:
        """At the prices of the mode the run will use."""
        return self.batch_usd if self.mode == "batch" else self.sync_usd

    def lines(self) -> list[str]:
        def usd(value: float | None) -> str:
            return f"${value:,.4f}" if value is not None else "unknown (model not priced in the catalog)"

        per = "max_tokens" if not self.output_assumed else f"assumed {ASSUMED_OUTPUT_TOKENS} (no max_tokens)"
        batch_note = " (model not accepted by the batch endpoint)" if self.batch_accepted is False else ""
        return [
            f"model {self.model}, mode {self.mode}",
            f"rows {self.rows}: {self.to_send} to send, {self.cached} from the row cache, "
            f"{self.rejected} rejected before sending",
            f"input tokens ≈ {self.prompt_tokens:,}; "
            f"output tokens ≤ {self.output_tokens:,} ({per} per answer)",
            f"cost at batch prices: {usd(self.batch_usd)}{batch_note}",
            f"cost at standard (sync) prices: {usd(self.sync_usd)}",
        ]


def estimate_plan(plan: RunPlan, job: JobSpec) -> Estimate:
    to_send = plan.total_rows - plan.rejected_rows - plan.cached_rows
    per_answer, assumed = answer_tokens(job.params)
    sheet = price_sheet(job.model, job.catalog_path)
    info = model_info(job.model, job.catalog_path)
    overhead = MESSAGE_OVERHEAD_TOKENS * (2 if job.system else 1) * to_send
    prompt_tokens = plan.prompt_tokens_estimate + overhead
    per_prompt = prompt_tokens / to_send if to_send else 0.0

    def cost(batch: bool) -> float | None:
        if sheet is None:
            return None
        return estimate_cost(to_send, per_prompt, per_answer, sheet, batch=batch) if to_send else 0.0

    return Estimate(
        model=job.model,
        mode=plan.mode,
        rows=plan.total_rows,
        rejected=plan.rejected_rows,
        cached=plan.cached_rows,
        to_send=to_send,
        prompt_tokens=prompt_tokens,
        output_tokens=to_send * per_answer,
        output_assumed=assumed,
        batch_usd=cost(True),
        sync_usd=cost(False),
        batch_accepted=info.batch_accepted if info else None,
    )


def check_budget(estimate: Estimate, job: JobSpec) -> None:
    """Refuse before any upload when the estimate is above the job's max_cost_usd."""
    if job.max_cost_usd is None:
        return
    cost = estimate.cost_usd
    if cost is None:
        raise InputError(
            f"field `max_cost_usd`: {job.model} has no prices in the model catalog, so the cost cannot be "
            "checked against the budget; add its prices to the catalog (field `catalog`) or drop max_cost_usd"
        )
    if cost > job.max_cost_usd:
        raise InputError(
            f"field `max_cost_usd`: the estimated cost ${cost:,.4f} ({estimate.to_send} requests, mode "
            f"{estimate.mode}) is above the budget ${job.max_cost_usd:,.4f}; nothing was sent. Raise the "
            "budget, lower max_tokens, or split the table"
        )
