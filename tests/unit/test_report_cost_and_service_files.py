"""The report's cost lines and service-files line, from run summaries: the cost is the bill,
the catalog's estimate beside it is flagged only past a 1% gap, and what the run left at the
service is said."""

from __future__ import annotations

from typing import Any

from tasks.stages.report import RunSummary, cost_lines, render_markdown


def summary(**fields: Any) -> RunSummary:
    base: dict[str, Any] = {
        "run_key": "k",
        "input_path": "in.csv",
        "output_path": "out.parquet",
        "model": "grok-4.3",
        "rows": 10,
        "by_status": {"succeeded": 10},
        "tokens": {},
        "cost_usd": 0.001,
        "rounds": 1,
        "service_cost_usd": 0.001,
        "estimated_cost_usd": 0.001,
    }
    return RunSummary(**{**base, **fields})


def test_the_bill_and_the_estimate_within_1_percent_are_not_flagged() -> None:
    lines = cost_lines(summary(cost_usd=0.001009, service_cost_usd=0.001009))
    assert lines == [
        "- cost: $0.001009 (billed by the service)",
        "- catalog estimate: $0.001000 (catalog batch prices x tokens used)",
    ]


def test_a_bill_more_than_1_percent_off_the_estimate_is_flagged_either_way() -> None:
    above = cost_lines(summary(cost_usd=0.0013, service_cost_usd=0.0013))[1]
    assert above.startswith("- catalog estimate: $0.001000 (catalog batch prices x tokens used) (**the bill")
    assert "+30% against the catalog's estimate**" in above
    below = cost_lines(summary(cost_usd=0.0008, service_cost_usd=0.0008))[1]
    assert "**the bill is -20% against the catalog's estimate**" in below


def test_rows_the_service_gave_no_figure_for_are_billed_at_the_estimate() -> None:
    lines = cost_lines(
        summary(cost_usd=0.0015, service_cost_usd=0.001, estimated_cost_usd=0.0015, estimated_rows=3)
    )
    assert (
        lines[0]
        == "- cost: $0.001500 (billed by the service; estimated for 3 row(s) it reported no cost for)"
    )
    assert "**" not in lines[1]


def test_without_the_services_figure_the_cost_is_the_estimate_and_nothing_is_compared() -> None:
    lines = cost_lines(summary(mode="sync", service_cost_usd=None, estimated_rows=10))
    assert lines == [
        "- cost: $0.001000 (estimated: catalog standard prices x tokens used; the service reports no cost)"
    ]
    nothing = cost_lines(summary(cost_usd=0.0, service_cost_usd=None, estimated_cost_usd=0.0, from_cache=10))
    assert nothing[0] == "- cost: $0.000000 (nothing was billed)"


def test_a_model_without_prices_is_billed_but_not_estimated() -> None:
    lines = cost_lines(summary(priced=False, estimated_cost_usd=None))
    assert lines == [
        "- cost: $0.001000 (billed by the service)",
        "- catalog estimate: unknown: `grok-4.3` has no prices in the model catalog",
    ]
    unknown = cost_lines(
        summary(priced=False, estimated_cost_usd=None, service_cost_usd=None, cost_known=False)
    )
    assert unknown[0].startswith("- cost: unknown for some rows: `grok-4.3` has no prices")


def test_the_report_says_what_was_deleted_or_kept_at_the_service() -> None:
    assert "- files deleted at the service once collected: 3\n" in render_markdown(
        summary(service_files_deleted=3)
    )
    kept = render_markdown(summary(service_files_kept=True))
    assert "- files at the service: kept (`keep_service_files: true`)\n" in kept
    assert "files deleted" not in kept
    assert "files" not in render_markdown(summary(mode="sync")).split("| status")[0]
