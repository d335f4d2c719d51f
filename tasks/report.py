"""The run report: rows by status, tokens, cost, batches and example errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.ledger import BatchRow
from tasks.providers.base import BatchState
from tasks.records import ROW_STATUSES


@dataclass
class RunSummary:
    run_key: str
    input_path: str
    output_path: str
    model: str
    rows: int
    by_status: dict[str, int]
    tokens: dict[str, int]
    cost_usd: float
    rounds: int
    batches: list[dict[str, Any]] = field(default_factory=list)
    rejected_files: list[str] = field(default_factory=list)
    error_examples: list[tuple[str, int, str]] = field(default_factory=list)  # error, rows, a custom_id

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _sum(table: pa.Table, column: str) -> int:
    return int(pc.sum(table.column(column)).as_py() or 0)


def summarize(
    results: pa.Table, batches: list[BatchRow], *, run_key: str, input_path: str, output_path: str, model: str
) -> RunSummary:
    counts = {status: 0 for status in ROW_STATUSES}
    for item in results.group_by("status").aggregate([("status", "count")]).to_pylist():
        counts[item["status"]] = item["status_count"]
    errors = results.filter(pc.is_valid(results.column("error")))
    examples = []
    if errors.num_rows:
        grouped = errors.group_by("error").aggregate([("custom_id", "count"), ("custom_id", "min")])
        for item in sorted(grouped.to_pylist(), key=lambda i: -i["custom_id_count"])[:8]:
            examples.append((item["error"], item["custom_id_count"], item["custom_id_min"]))
    return RunSummary(
        run_key=run_key,
        input_path=input_path,
        output_path=output_path,
        model=model,
        rows=results.num_rows,
        by_status=counts,
        tokens={
            name: _sum(results, name)
            for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")
        },
        cost_usd=float(pc.sum(results.column("cost_usd")).as_py() or 0.0),
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


def render_markdown(summary: RunSummary) -> str:
    lines = [f"# grok-batch run {summary.run_key}", ""]
    if summary.rejected_files:
        lines += ["> **The service rejected input file(s); their rows failed:**"]
        lines += [f"> - {text}" for text in summary.rejected_files]
        lines += [""]
    lines += [
        f"- input: `{summary.input_path}`",
        f"- output: `{summary.output_path}`",
        f"- model: `{summary.model}`",
        f"- rows: {summary.rows}, rounds: {summary.rounds}",
        f"- cost: ${summary.cost_usd:.6f} (as reported by the service)",
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
