"""The run report: rows by status, tokens, cost, batches and example errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.infra.ledger import BatchRow
from tasks.infra.records import ROW_STATUSES
from tasks.money.pricing import costs_disagree
from tasks.providers.base import BatchState


@dataclass
class RunSummary:
    run_key: str
    input_path: str
    output_path: str
    model: str
    rows: int
    by_status: dict[str, int]
    tokens: dict[str, int]
    cost_usd: float  # the bill: the service's figures, the catalog's estimate for rows it gave none
    rounds: int
    mode: str = "batch"
    service_cost_usd: float | None = None  # the service's own figure, where it gives one
    priced: bool = True  # the model has prices in the catalog
    estimated_cost_usd: float | None = None  # the catalog's figure for the same tokens
    estimated_rows: int = 0  # rows billed at the estimate: the service reported no cost for them
    cost_known: bool = True  # every answered row has a cost (from the service or the catalog)
    service_files_deleted: int = 0  # files of this run deleted at the service once collected
    service_files_kept: bool = False  # the job said keep_service_files: true
    from_cache: int = 0
    saved_usd: float = 0.0
    batches: list[dict[str, Any]] = field(default_factory=list)
    rejected_files: list[str] = field(default_factory=list)
    error_examples: list[tuple[str, int, str]] = field(default_factory=list)  # error, rows, a custom_id
    notes: list[str] = field(default_factory=list)  # what the reader must know, e.g. an export refused

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


TOKEN_COLUMNS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")
_MAX_DISTINCT_ERRORS = 10_000  # error texts kept for the examples; counts stay exact


@dataclass
class Tally:
    """Totals over the output's result columns, added chunk by chunk as the join streams."""

    rows: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: {status: 0 for status in ROW_STATUSES})
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_COLUMNS, 0))
    cost_usd: float = 0.0  # the bill (sum of cost_usd)
    estimated_cost_usd: float = 0.0  # the catalog's figure (sum of estimated_cost_usd)
    unpriced_rows: int = 0  # answered, but no catalog price to estimate them with
    unknown_cost_rows: int = 0  # answered, with neither the service's figure nor a catalog price
    estimated_rows: int = 0  # sent and answered, billed at the estimate (no figure from the service)
    service_cost_usd: float | None = None
    from_cache: int = 0
    saved_usd: float = 0.0
    service_files_deleted: int = 0  # set by the join from what collection recorded
    service_files_kept: bool = False
    errors: dict[str, list[Any]] = field(default_factory=dict)  # error -> [rows, first custom_id]

    def add(self, chunk: pa.Table, saved_usd: float = 0.0) -> None:
        self.rows += chunk.num_rows
        sent = chunk.filter(pc.invert(chunk.column("from_cache")))  # tokens and fees this run paid
        self.saved_usd += saved_usd
        self.from_cache += int(pc.sum(chunk.column("from_cache")).as_py() or 0)
        answered = pc.is_valid(chunk.column("prompt_tokens"))
        self.unpriced_rows += _count(pc.and_(answered, pc.is_null(chunk.column("estimated_cost_usd"))))
        self.unknown_cost_rows += _count(pc.and_(answered, pc.is_null(chunk.column("cost_usd"))))
        service = sent.column("service_cost_usd")
        self.estimated_rows += _count(
            pc.and_(
                pc.and_(pc.is_valid(sent.column("prompt_tokens")), pc.is_null(service)),
                pc.is_valid(sent.column("estimated_cost_usd")),
            )
        )
        if service.null_count < len(service):
            self.service_cost_usd = (self.service_cost_usd or 0.0) + float(pc.sum(service).as_py() or 0.0)
        for item in chunk.group_by("status").aggregate([("status", "count")]).to_pylist():
            self.by_status[item["status"]] = self.by_status.get(item["status"], 0) + item["status_count"]
        for name in TOKEN_COLUMNS:
            self.tokens[name] += int(pc.sum(sent.column(name)).as_py() or 0)
        self.cost_usd += float(pc.sum(chunk.column("cost_usd")).as_py() or 0.0)
        self.estimated_cost_usd += float(pc.sum(chunk.column("estimated_cost_usd")).as_py() or 0.0)
        errors = chunk.filter(pc.is_valid(chunk.column("error")))
        if errors.num_rows:
            grouped = errors.group_by("error").aggregate([("custom_id", "count"), ("custom_id", "min")])
            for item in grouped.to_pylist():
                known = self.errors.get(item["error"])
                if known is not None:
                    known[0] += item["custom_id_count"]
                elif len(self.errors) < _MAX_DISTINCT_ERRORS:
                    self.errors[item["error"]] = [item["custom_id_count"], item["custom_id_min"]]


def _count(mask: pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


def summarize(
    tally: Tally,
    batches: list[BatchRow],
    *,
    run_key: str,
    input_path: str,
    output_path: str,
    model: str,
    mode: str = "batch",
) -> RunSummary:
    ranked = sorted(tally.errors.items(), key=lambda item: -item[1][0])[:8]
    examples = [(error, count, example) for error, (count, example) in ranked]
    return RunSummary(
        run_key=run_key,
        input_path=input_path,
        output_path=output_path,
        model=model,
        rows=tally.rows,
        by_status=tally.by_status,
        tokens=tally.tokens,
        cost_usd=tally.cost_usd,
        mode=mode,
        service_cost_usd=tally.service_cost_usd,
        priced=tally.unpriced_rows == 0,
        estimated_cost_usd=tally.estimated_cost_usd if tally.unpriced_rows == 0 else None,
        estimated_rows=tally.estimated_rows,
        cost_known=tally.unknown_cost_rows == 0,
        service_files_deleted=tally.service_files_deleted,
        service_files_kept=tally.service_files_kept,
        from_cache=tally.from_cache,
        saved_usd=tally.saved_usd,
        rounds=max((b.round_no for b in batches), default=0),
        batches=[
            {
                "batch": b.batch_name,
                "batch_id": b.batch_id,
                "round": b.round_no,
                "requests": b.lines,
                "state": b.state,
                "message": b.message,
            }
            for b in batches
        ],
        rejected_files=[
            f"{b.batch_name} ({b.batch_id}): {b.message}" for b in batches if b.state == BatchState.REJECTED
        ],
        error_examples=examples,
    )


COST_WARNING = "against the catalog's estimate"  # in the line that flags a bill over 1% off


def cost_lines(summary: RunSummary) -> list[str]:
    """The run's cost, which is the bill (the service's own figures; the catalog's estimate
    only for rows the service reported no cost for), the catalog's estimate beside it with a
    flag when the two differ by more than 1%, and what the row cache saved."""
    basis = f"catalog {'batch' if summary.mode == 'batch' else 'standard'} prices x tokens used"
    billed = summary.service_cost_usd is not None
    if not summary.cost_known:
        lines = [
            f"- cost: unknown for some rows: `{summary.model}` has no prices in the model catalog "
            "and the service reported no cost for them"
        ]
    elif not billed and not summary.estimated_rows:
        lines = [f"- cost: ${summary.cost_usd:.6f} (nothing was billed)"]  # all cached, or no answer
    elif not billed:
        lines = [f"- cost: ${summary.cost_usd:.6f} (estimated: {basis}; the service reports no cost)"]
    elif summary.estimated_rows:
        lines = [
            f"- cost: ${summary.cost_usd:.6f} (billed by the service; estimated for "
            f"{summary.estimated_rows} row(s) it reported no cost for)"
        ]
    else:
        lines = [f"- cost: ${summary.cost_usd:.6f} (billed by the service)"]
    if billed:
        estimate = summary.estimated_cost_usd
        if not summary.priced or estimate is None:
            lines.append(f"- catalog estimate: unknown: `{summary.model}` has no prices in the model catalog")
        else:
            note = ""
            if summary.cost_known and costs_disagree(estimate, summary.cost_usd):
                gap = (summary.cost_usd - estimate) / max(estimate, 1e-12)
                note = (
                    f" (**the bill is {gap:+.0%} {COST_WARNING}**: check the catalog's prices and batch "
                    "discount for this model)"
                )
            lines.append(f"- catalog estimate: ${estimate:.6f} ({basis}){note}")
    if summary.from_cache:
        lines.append(
            f"- from the row cache: {summary.from_cache} row(s), not sent; saved ${summary.saved_usd:.6f}"
        )
    return lines


def service_files_lines(summary: RunSummary) -> list[str]:
    """What the run left stored at the service (request, output and error files)."""
    if summary.mode != "batch":
        return []  # mode sync stores nothing there
    if summary.service_files_kept:
        return ["- files at the service: kept (`keep_service_files: true`)"]
    return [f"- files deleted at the service once collected: {summary.service_files_deleted}"]


def render_markdown(summary: RunSummary) -> str:
    lines = [f"# grok-batch run {summary.run_key}", ""]
    if summary.rejected_files:
        lines += ["> **The service rejected input file(s); their rows failed:**"]
        lines += [f"> - {text}" for text in summary.rejected_files]
        lines += [""]
    lines += [
        f"- input: `{summary.input_path}`",
        f"- output: `{summary.output_path}`",
        f"- model: `{summary.model}`, mode: {summary.mode}",
        f"- rows: {summary.rows}, rounds: {summary.rounds}",
        *cost_lines(summary),
        *service_files_lines(summary),
        *(["", "## Notes", "", *(f"- {note}" for note in summary.notes)] if summary.notes else []),
        "",
        "| status | rows |",
        "|---|---|",
    ]
    lines += [f"| {status} | {count} |" for status, count in summary.by_status.items() if count]
    lines += ["", "| tokens | count |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in summary.tokens.items()]
    lines += ["", "## Batches", "", "| batch | round | requests | state | message |", "|---|---|---|---|---|"]
    lines += [
        f"| {b['batch']} | {b['round']} | {b['requests']} | {b['state']} | {b['message'] or ''} |"
        for b in summary.batches
    ]
    if summary.error_examples:
        lines += ["", "## Errors", "", "| error | rows | example custom_id |", "|---|---|---|"]
        lines += [
            f"| {error.replace('|', '/')} | {count} | {cid} |" for error, count, cid in summary.error_examples
        ]
    return "\n".join(lines) + "\n"
