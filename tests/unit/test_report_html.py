"""The HTML report from a summary and an output table: untrusted text is shown as text, never
markup; the charts count what the table holds (over several record batches); the artifact's
status chart is a valid SVG file; the page loads nothing."""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import runner
from tasks.spec.answer_schema import schema_from_columns
from tasks.stages import report_html
from tasks.stages.report import RunSummary
from tasks.stages.report_html import (
    Distribution,
    html_report_path,
    read_facts,
    render_html,
    render_html_report,
    status_chart_data_uri,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Elements(HTMLParser):
    """Every element and attribute of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def elements(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def summary(by_status: dict[str, int], **fields: Any) -> RunSummary:
    base: dict[str, Any] = {
        "run_key": "k1",
        "input_path": "in.csv",
        "output_path": "out.parquet",
        "model": "grok-4.3",
        "rows": sum(by_status.values()),
        "by_status": by_status,
        "tokens": {"prompt_tokens": 100, "cached_tokens": 10, "completion_tokens": 50, "reasoning_tokens": 5},
        "cost_usd": 0.002,
        "rounds": 1,
        "service_cost_usd": 0.002,
        "estimated_cost_usd": 0.002,
    }
    return RunSummary(**{**base, **fields})


def write_output(path: Path, columns: dict[str, list[Any]], types: dict[str, pa.DataType]) -> Path:
    pq.write_table(
        pa.table({name: pa.array(values, type=types.get(name)) for name, values in columns.items()}), path
    )
    return path


def result_columns(statuses: list[str], prefix: str = "") -> dict[str, list[Any]]:
    n = len(statuses)
    return {
        prefix + "custom_id": [f"c{i}" for i in range(n)],
        prefix + "status": statuses,
        prefix + "response": [f"answer {i}" if s == "succeeded" else None for i, s in enumerate(statuses)],
        prefix + "error": [None if s == "succeeded" else f"error {i}" for i, s in enumerate(statuses)],
    }


# -- untrusted text --------------------------------------------------------------------------
def test_a_script_in_an_answer_an_error_an_id_or_the_summary_is_shown_as_text(tmp_path: Path) -> None:
    statuses = ["succeeded", "failed", "invalid_output"]
    columns = result_columns(statuses)
    columns["response"] = [HOSTILE, None, HOSTILE + " not JSON"]
    columns["error"] = [None, HOSTILE, "not JSON"]
    columns["id"] = ['"><svg onload=alert(2)>', "r2", "r3"]
    out = write_output(tmp_path / "out.parquet", columns, {})
    hostile_summary = summary(
        {"succeeded": 1, "failed": 1, "invalid_output": 1},
        model=HOSTILE,
        input_path=f"/in/{HOSTILE}.csv",
        error_examples=[(HOSTILE, 1, "c1")],
        rejected_files=[f"b1 (id): {HOSTILE}"],
        batches=[
            {
                "batch": HOSTILE,
                "batch_id": "x",
                "round": 1,
                "requests": 3,
                "state": "done",
                "message": HOSTILE,
            }
        ],
    )
    page = render_html_report(hostile_summary, out, id_column="id")

    parsed = elements(page)
    tags = {tag for tag, _ in parsed.tags}
    assert "script" not in tags and "img" not in tags
    assert [tag for tag, _ in parsed.tags].count("svg") == 2  # ours: the status and token charts
    assert not [(tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on")]
    assert "<script" not in page.lower()
    shown = "".join(parsed.text)
    assert shown.count(HOSTILE) >= 6  # answer, error, model, input, top error, rejected file, batch...
    assert '"><svg onload=alert(2)>' in shown  # the id column, as text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_control_characters_and_long_texts_are_tamed(tmp_path: Path) -> None:
    columns = result_columns(["succeeded"])
    columns["response"] = ["a\x00b\x1bc" + "z" * 5000]
    out = write_output(tmp_path / "out.parquet", columns, {})
    page = render_html_report(summary({"succeeded": 1}), out)
    assert "\x00" not in page and "\x1b" not in page
    assert "abc" + "z" * 100 in page
    assert "z" * (report_html.MAX_TEXT + 10) not in page
    assert "(5,005 characters)" in page


def test_the_page_loads_nothing_and_forbids_scripts(tmp_path: Path) -> None:
    out = write_output(tmp_path / "out.parquet", result_columns(["succeeded", "failed"]), {})
    page = render_html_report(summary({"succeeded": 1, "failed": 1}), out)
    parsed = elements(page)
    csp = [
        attrs.get("content")
        for tag, attrs in parsed.tags
        if attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]
    assert not [attrs for _, attrs in parsed.tags if {"src", "href"} & set(attrs)]
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}


# -- what the table holds --------------------------------------------------------------------
def structured_table(tmp_path: Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """A structured job's output with the grok_ prefix: 60 rows, every third not succeeded."""
    schema = schema_from_columns(
        {
            "sentiment": ["positive", "negative", "neutral", None],
            "flag": "boolean",
            "stars": "integer",
            "score": "number?",
            "reason": "string",
        }
    )
    rows: list[dict[str, Any]] = []
    for i in range(60):
        status = "succeeded" if i % 3 else ("failed" if i % 2 else "rejected")
        ok = status == "succeeded"
        rows.append(
            {
                "status": status,
                "sentiment": (["positive", "negative", None][i % 3] if ok else None),
                "flag": (i % 4 == 1) if ok else None,
                "stars": (i % 5 + 1) if ok else None,
                "score": (None if i % 7 == 0 else i * 0.37 - 3.0) if ok else None,
                "reason": f"because {i}" if ok else None,
            }
        )
    columns = result_columns([r["status"] for r in rows], prefix="grok_")
    types = {"grok_flag": pa.bool_(), "grok_stars": pa.int64(), "grok_score": pa.float64()}
    for name in ("sentiment", "flag", "stars", "score", "reason"):
        columns["grok_" + name] = [r[name] for r in rows]
    return write_output(tmp_path / "out.parquet", columns, types), schema, rows


def test_distributions_and_histograms_count_the_succeeded_rows_over_many_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "_BATCH_ROWS", 7)  # 60 rows in 9 record batches
    out, schema, rows = structured_table(tmp_path)
    ok = [r for r in rows if r["status"] == "succeeded"]
    by_status = {"succeeded": len(ok), "failed": 10, "rejected": 10}
    facts = read_facts(out, by_status, answer_schema=schema, prefix="grok_")

    sentiment, flag = facts.distributions
    assert (sentiment.name, sentiment.kind, flag.name, flag.kind) == (
        "grok_sentiment",
        "enum",
        "grok_flag",
        "boolean",
    )
    assert sentiment.bars() == [
        ("positive", sum(r["sentiment"] == "positive" for r in ok)),
        ("negative", sum(r["sentiment"] == "negative" for r in ok)),
        ("neutral", 0),  # allowed, never chosen: shown as 0
        ("(null)", sum(r["sentiment"] is None for r in ok)),
    ]
    assert flag.bars() == [("true", sum(r["flag"] for r in ok)), ("false", sum(not r["flag"] for r in ok))]

    stars, score = facts.histograms
    assert stars.per_value and [(low, count) for low, _, count in stars.bins] == [
        (float(v), sum(r["stars"] == v for r in ok)) for v in range(1, 6)
    ]
    values = [r["score"] for r in ok if r["score"] is not None]
    assert not score.per_value and len(score.bins) == report_html.MAX_BINS
    assert (score.count, score.low, score.high) == (len(values), min(values), max(values))
    assert score.mean == pytest.approx(sum(values) / len(values))
    width = (max(values) - min(values)) / report_html.MAX_BINS
    expected = [0] * report_html.MAX_BINS
    for value in values:  # the top value belongs to the last bin
        expected[min(math.floor((value - min(values)) / width), report_html.MAX_BINS - 1)] += 1
    assert [count for _, _, count in score.bins] == expected
    assert facts.free_text == ["grok_reason"]

    page = render_html(summary(by_status), facts)
    parsed = elements(page)
    figures = [attrs.get("data-column") for tag, attrs in parsed.tags if tag == "figure"]
    assert figures == ["grok_sentiment", "grok_flag", "grok_stars", "grok_score"]
    bins = [attrs for tag, attrs in parsed.tags if tag == "g" and attrs.get("class") == "bin"]
    assert [int(b["data-count"] or 0) for b in bins] == [count for _, _, count in stars.bins + score.bins]


def test_examples_are_the_first_rows_of_each_status_and_reading_stops_once_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "_BATCH_ROWS", 10)
    statuses = ["succeeded", "failed", "succeeded", "failed", "succeeded", "succeeded", "rejected"] + [
        "succeeded"
    ] * 93
    out = write_output(tmp_path / "out.parquet", result_columns(statuses), {})
    read: list[int] = []
    batches = report_html._batches

    def counted(table: pq.ParquetFile, columns: list[str]) -> Any:
        for batch in batches(table, columns):
            read.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(report_html, "_batches", counted)
    facts = read_facts(out, {"succeeded": 97, "failed": 2, "rejected": 1, "cancelled": 0})
    assert [e.ident for e in facts.examples["succeeded"]] == ["c0", "c2", "c4"]
    assert [(e.ident, e.error) for e in facts.examples["failed"]] == [("c1", "error 1"), ("c3", "error 3")]
    assert [e.ident for e in facts.examples["rejected"]] == ["c6"]
    assert "cancelled" not in facts.examples
    assert read == [10]  # every status had its examples in the first batch of ten

    page = render_html(summary({"succeeded": 97, "failed": 2, "rejected": 1}), facts)
    example_rows = [
        attrs["data-status"] for tag, attrs in elements(page).tags if attrs.get("class") == "example"
    ]
    assert example_rows == ["succeeded"] * 3 + ["failed"] * 2 + ["rejected"]


def test_a_distribution_keeps_its_most_common_values_and_sums_the_rest() -> None:
    counts = {f"v{i:02d}": 100 - i for i in range(30)}
    bars = Distribution("c", "enum", counts=counts, nulls=4).bars()
    assert len(bars) == report_html.MAX_VALUES + 1  # the top values, "(other values)", "(null)"
    assert bars[: report_html.MAX_VALUES - 1] == [
        (f"v{i:02d}", 100 - i) for i in range(report_html.MAX_VALUES - 1)
    ]
    assert bars[-2] == ("(other values)", sum(100 - i for i in range(report_html.MAX_VALUES - 1, 30)))
    assert bars[-1] == ("(null)", 4)


# -- the status chart --------------------------------------------------------------------------
def test_the_artifact_image_is_an_svg_file_with_one_bar_per_status_present() -> None:
    by_status = {"succeeded": 9_999_998, "failed": 1, "invalid_output": 0, "rejected": 1}
    uri = status_chart_data_uri(by_status)
    assert uri.startswith("data:image/svg+xml;base64,")
    root = ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))  # well-formed XML, or it raises
    assert root.tag == f"{SVG}svg" and root.get("width") == "720"
    bars = root.findall(f".//{SVG}g[@class='bar']")
    assert [(b.get("data-label"), b.get("data-count")) for b in bars] == [
        ("succeeded", "9999998"),
        ("failed", "1"),
        ("rejected", "1"),
    ]
    widths = [float(b.find(f"{SVG}rect").get("width") or 0) for b in bars]  # type: ignore[union-attr]
    assert widths[0] == 380 and widths[1] == widths[2] == 2  # one row in ten million still shows
    labels = [b.findall(f"{SVG}text")[0].text for b in bars]
    assert labels == ["succeeded", "failed", "rejected"]


def test_the_report_is_named_like_the_markdown_one(tmp_path: Path) -> None:
    out = tmp_path / "reviews.parquet"
    assert html_report_path(out) == tmp_path / "reviews.report.html"
    assert html_report_path(out) == runner.report_path(out).with_suffix(".html")  # what the CLI prints


def test_a_table_without_result_columns_gives_the_summary_parts_only(tmp_path: Path) -> None:
    out = write_output(tmp_path / "out.parquet", {"text": ["a", "b"]}, {})
    page = render_html_report(
        summary({"succeeded": 2}), out, answer_schema=schema_from_columns({"x": "integer"})
    )
    assert 'id="status-chart"' in page and "no example read" in page
