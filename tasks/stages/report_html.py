"""The run report as one HTML page: rows by status as a bar chart, cost and tokens, for a
structured job the distribution of each enum and boolean answer column and a histogram of each
numeric one, and a few example rows (answer and error) of every status.

Self-contained: inline CSS and hand-made inline SVG, no script, no font or image from anywhere
(a Content-Security-Policy in the page says so to the browser too). Everything that comes from
the table or the model (answers, errors, ids, enum values) is HTML-escaped: it is untrusted.

The output table is read column by column in record batches and counted with pyarrow.compute,
so a 10M-row output never becomes Python lists: one pass over the status and typed columns,
one over the numeric columns for their bins, and one over the example columns that stops as
soon as every status has its examples.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.records import ROW_STATUSES, SUCCEEDED
from tasks.spec.answer_schema import output_fields
from tasks.stages.report import RunSummary, cost_lines, service_files_lines

EXAMPLES_PER_STATUS = 3
MAX_TEXT = 600  # characters of one answer or error shown in the examples
MAX_BINS = 20  # histogram bars; an integer column spanning at most this many values gets one bar each
MAX_VALUES = 15  # bars of one distribution; the rest are summed as "other values"
MAX_BATCH_ROWS = 200  # batches listed; the rest are counted
_MAX_DISTINCT = 1_000  # values counted per column (an enum is far below)
_BATCH_ROWS = 65_536

# Okabe-Ito colours: told apart with any colour vision.
STATUS_COLORS = {
    "succeeded": "#009E73",
    "failed": "#D55E00",
    "invalid_output": "#E69F00",
    "cancelled": "#999999",
    "expired": "#CC79A7",
    "rejected": "#0072B2",
}
_OTHER_COLOR = "#666666"
_VALUE_COLOR = "#3B7DD8"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # not allowed in XML, noise in HTML
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def html_report_path(output: Path) -> Path:
    """The HTML report beside the output: reviews.parquet -> reviews.report.html."""
    return output.with_name(output.stem + ".report.html")


# -- what the table says -----------------------------------------------------------------
@dataclass
class Distribution:
    """Counts of the values of one enum or boolean answer column over the succeeded rows."""

    name: str
    kind: str  # "enum" or "boolean"
    allowed: list[str] = field(default_factory=list)  # an enum's values, in the schema's order
    counts: dict[str, int] = field(default_factory=dict)
    nulls: int = 0  # succeeded rows whose answer left the column null
    other: int = 0  # values past _MAX_DISTINCT

    def bars(self) -> list[tuple[str, int]]:
        """(label, count) in the schema's order (an enum value nobody chose shows as 0),
        then other values by count; at most MAX_VALUES bars, the rest summed."""
        known = list(self.allowed) or (["true", "false"] if self.kind == "boolean" else [])
        items = [(value, self.counts.get(value, 0)) for value in known]
        extra = sorted(((v, c) for v, c in self.counts.items() if v not in known), key=lambda vc: -vc[1])
        items += extra
        other = self.other
        if len(items) > MAX_VALUES:
            other += sum(count for _, count in items[MAX_VALUES - 1 :])
            items = items[: MAX_VALUES - 1]
        if other:
            items.append(("(other values)", other))
        if self.nulls:
            items.append(("(null)", self.nulls))
        return items


@dataclass
class Histogram:
    """The spread of one numeric answer column over the rows that have a value."""

    name: str
    integer: bool
    count: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None
    bins: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, rows)
    per_value: bool = False  # one bar per integer value

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class Example:
    ident: str
    response: str | None
    error: str | None


@dataclass
class TableFacts:
    distributions: list[Distribution] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
    free_text: list[str] = field(default_factory=list)  # string/JSON answer columns: see the examples
    examples: dict[str, list[Example]] = field(default_factory=dict)  # status -> a few rows


def _enum_values(prop: Any) -> list[str] | None:
    """The allowed strings of an enum property (also spelled nullable with anyOf/oneOf)."""
    if not isinstance(prop, dict):
        return None
    values = prop.get("enum")
    if isinstance(values, list):
        strings = [value for value in values if value is not None]
        return strings if strings and all(isinstance(v, str) for v in strings) else None
    for key in ("anyOf", "oneOf"):
        options = prop.get(key)
        if isinstance(options, list):
            found = [v for option in options if (v := _enum_values(option))]
            if len(found) == 1:
                return found[0]
    return None


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_facts(
    output: Path,
    by_status: dict[str, int],
    *,
    answer_schema: dict[str, Any] | None = None,
    prefix: str = "",
    id_column: str | None = None,
) -> TableFacts:
    """Distributions, histograms and examples from the output table, read in record batches
    of only the columns each needs."""
    table = pq.ParquetFile(output)
    present = set(table.schema_arrow.names)
    status = prefix + "status"
    facts = TableFacts()
    if answer_schema is not None:
        properties = answer_schema.get("properties") or {}
        for typed in output_fields(answer_schema):
            column = prefix + typed.name
            if column not in present:
                continue
            allowed = _enum_values(properties.get(typed.name))
            if pa.types.is_boolean(typed.type):
                facts.distributions.append(Distribution(column, "boolean"))
            elif allowed is not None:
                facts.distributions.append(Distribution(column, "enum", allowed=allowed))
            elif pa.types.is_integer(typed.type) or pa.types.is_floating(typed.type):
                facts.histograms.append(Histogram(column, integer=pa.types.is_integer(typed.type)))
            else:
                facts.free_text.append(column)
    if status not in present:
        return facts
    if facts.distributions or facts.histograms:
        _count_values(table, status, facts)
    if any(h.count for h in facts.histograms):
        _bin_values(table, facts.histograms)
    facts.examples = _examples(table, by_status, status, prefix, id_column, present)
    return facts


def _batches(table: pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    return table.iter_batches(batch_size=_BATCH_ROWS, columns=columns)


def _count_values(table: pq.ParquetFile, status: str, facts: TableFacts) -> None:
    names = [d.name for d in facts.distributions] + [h.name for h in facts.histograms]
    for batch in _batches(table, [status, *names]):
        succeeded = pc.fill_null(pc.equal(batch.column(status), SUCCEEDED), False)
        for dist in facts.distributions:
            values = batch.column(dist.name).filter(succeeded)
            dist.nulls += values.null_count
            counted = pc.value_counts(values.drop_null())
            for value, count in zip(
                counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
            ):
                key = _label(value)
                if key in dist.counts or len(dist.counts) < _MAX_DISTINCT:
                    dist.counts[key] = dist.counts.get(key, 0) + count
                else:
                    dist.other += count
        for hist in facts.histograms:
            values = _finite(batch.column(hist.name))
            if not len(values):
                continue
            low_high = pc.min_max(values)
            low, high = low_high["min"].as_py(), low_high["max"].as_py()
            hist.low = low if hist.low is None else min(hist.low, low)
            hist.high = high if hist.high is None else max(hist.high, high)
            hist.count += len(values)
            hist.total += float(pc.sum(pc.cast(values, pa.float64())).as_py() or 0.0)


def _finite(values: pa.Array) -> pa.Array:
    values = values.drop_null()
    if pa.types.is_floating(values.type):
        values = values.filter(pc.is_finite(values))
    return values


def _bin_values(table: pq.ParquetFile, histograms: list[Histogram]) -> None:
    plans: list[tuple[Histogram, float, float, int]] = []  # histogram, low, width, bins
    for hist in histograms:
        if not hist.count or hist.low is None or hist.high is None:
            continue
        low, high = hist.low, hist.high
        if hist.integer and high - low + 1 <= MAX_BINS:
            hist.per_value = True
            bins, width = int(high - low) + 1, 1.0
        elif high == low:
            bins, width = 1, 1.0
        else:
            bins = MAX_BINS
            width = (float(high) - float(low)) / bins
        plans.append((hist, float(low), width, bins))
    counts = {hist.name: [0] * bins for hist, _, _, bins in plans}
    for batch in _batches(table, [hist.name for hist, _, _, _ in plans]):
        for hist, low, width, bins in plans:
            values = pc.cast(_finite(batch.column(hist.name)), pa.float64())
            if not len(values):
                continue
            index = pc.cast(pc.floor(pc.divide(pc.subtract(values, low), width)), pa.int64())
            index = pc.max_element_wise(pc.min_element_wise(index, bins - 1), 0)
            counted = pc.value_counts(index)
            tally = counts[hist.name]
            for where, count in zip(
                counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
            ):
                tally[where] += count
    for hist, low, width, bins in plans:
        hist.bins = [(low + i * width, low + (i + 1) * width, counts[hist.name][i]) for i in range(bins)]


def _examples(
    table: pq.ParquetFile,
    by_status: dict[str, int],
    status: str,
    prefix: str,
    id_column: str | None,
    present: set[str],
) -> dict[str, list[Example]]:
    """The first few rows of every status, in table order; stops reading once each has them."""
    wanted = {s: min(EXAMPLES_PER_STATUS, n) for s, n in by_status.items() if n > 0}
    examples: dict[str, list[Example]] = {s: [] for s in wanted}
    ident = id_column if id_column and id_column in present else prefix + "custom_id"
    columns = [status] + [c for c in (ident, prefix + "response", prefix + "error") if c in present]
    for batch in _batches(table, list(dict.fromkeys(columns))):
        for name, found in examples.items():
            missing = wanted[name] - len(found)
            if missing <= 0:
                continue
            rows = pc.indices_nonzero(pc.fill_null(pc.equal(batch.column(status), name), False))
            for row in batch.take(rows[:missing]).to_pylist():
                found.append(
                    Example(
                        ident=_label(row.get(ident)),
                        response=row.get(prefix + "response"),
                        error=row.get(prefix + "error"),
                    )
                )
        if all(len(examples[s]) >= wanted[s] for s in wanted):
            break
    return examples


# -- charts -----------------------------------------------------------------------------------
def _e(text: Any) -> str:
    """Text of any origin, safe as HTML/XML text or attribute value."""
    return html.escape(_CONTROL.sub("", str(text)), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:.3e}"


def _svg_open(chart_id: str, width: int, height: int, label: str, css_class: str, standalone: bool) -> str:
    size = f'width="{width}" height="{height}"' if standalone else f'width="100%" style="max-width:{width}px"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{_e(chart_id)}" class="{css_class}" role="img" '
        f'aria-label="{_e(label)}" viewBox="0 0 {width} {height}" {size} '
        f'font-family="{_FONT}" font-size="13">'
    )


def bar_chart(
    chart_id: str,
    title: str,
    bars: list[tuple[str, int, str]],
    *,
    shares: bool = True,
    standalone: bool = False,
    compact: bool = False,
) -> str:
    """Horizontal bars, one per (label, count, colour): label, bar, then count (and share).
    A non-zero count is at least 2 px wide, so one failed row in ten million still shows.
    compact: half a page wide, for charts side by side."""
    width, label_w, bar_x, bar_max, row_h, bar_h = 720, 170, 180, 380, 28, 18
    chars = 24  # of a label, the rest in the tooltip
    if compact:
        width, label_w, bar_x, bar_max, chars = 440, 110, 118, 200, 15
    height = max(len(bars), 1) * row_h + 8
    total = sum(count for _, count, _ in bars) or 1
    top = max((count for _, count, _ in bars), default=0) or 1
    parts = [
        _svg_open(chart_id, width, height, title, "chart bars", standalone),
        f"<title>{_e(title)}</title>",
    ]
    if standalone:
        parts.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    for i, (label, count, color) in enumerate(bars):
        y = 4 + i * row_h
        w = 0 if count == 0 else max(2, round(count / top * bar_max))
        share = f" · {100.0 * count / total:.1f}%" if shares else ""
        text = f"{count:,}{share}"
        parts.append(
            f'<g class="bar" data-label="{_e(label)}" data-count="{count}">'
            f"<title>{_e(label)}: {_e(text)}</title>"
            f'<text x="{label_w}" y="{y + bar_h - 4}" text-anchor="end" fill="#222">'
            f"{_e(_short(label, chars))}</text>"
            f'<rect class="bar" x="{bar_x}" y="{y}" width="{w}" height="{bar_h}" rx="2" fill="{color}"/>'
            f'<text x="{bar_x + w + 8}" y="{y + bar_h - 4}" fill="#444">{_e(text)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def status_bars(by_status: dict[str, int]) -> list[tuple[str, int, str]]:
    order = [s for s in ROW_STATUSES if s in by_status] + [s for s in by_status if s not in ROW_STATUSES]
    return [(s, by_status[s], STATUS_COLORS.get(s, _OTHER_COLOR)) for s in order if by_status[s] > 0]


def status_chart_svg(by_status: dict[str, int], *, standalone: bool = False) -> str:
    """Rows by status as a bar chart; standalone: a complete SVG file (white background, fixed
    size) for an image, e.g. a data URI in a markdown artifact."""
    return bar_chart("status-chart", "Rows by status", status_bars(by_status), standalone=standalone)


def status_chart_data_uri(by_status: dict[str, int]) -> str:
    svg = status_chart_svg(by_status, standalone=True)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def histogram_svg(chart_id: str, hist: Histogram) -> str:
    """Vertical bars, one per bin, with each bin's rows above it and its range below."""
    width, height, x0, x1, top, base = 440, 190, 16, 424, 22, 150
    bins = hist.bins or [(0.0, 1.0, 0)]
    most = max(count for _, _, count in bins) or 1
    step = (x1 - x0) / len(bins)
    label = f"{hist.name}: {hist.count:,} values"
    parts = [
        _svg_open(chart_id, width, height, label, "chart histogram", False),
        f"<title>{_e(label)}</title>",
    ]
    parts.append(f'<line x1="{x0}" y1="{base}" x2="{x1}" y2="{base}" stroke="#888"/>')
    every = max(1, math.ceil(len(bins) / 5))  # about 6 axis labels
    for i, (low, high, count) in enumerate(bins):
        x = x0 + i * step
        h = 0 if count == 0 else max(2, round(count / most * (base - top)))
        what = _number(low) if hist.per_value else f"{_number(low)} to {_number(high)}"
        parts.append(
            f'<g class="bin" data-from="{low}" data-to="{high}" data-count="{count}">'
            f"<title>{_e(what)}: {count:,} rows</title>"
            f'<rect class="bin" x="{x + 1:.1f}" y="{base - h}" width="{max(step - 2, 1):.1f}" height="{h}" '
            f'fill="{_VALUE_COLOR}"/>'
        )
        if len(bins) <= 24 and count:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{base - h - 4}" text-anchor="middle" font-size="11" '
                f'fill="#444">{count:,}</text>'
            )
        parts.append("</g>")
        if hist.per_value:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{base + 16}" text-anchor="middle" fill="#222">'
                f"{_e(_number(low))}</text>"
            )
        elif i % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle" fill="#222">'
                f"{_e(_number(low))}</text>"
            )
    if not hist.per_value and hist.bins:
        parts.append(
            f'<text x="{x1}" y="{base + 16}" text-anchor="middle" fill="#222">'
            f"{_e(_number(hist.bins[-1][1]))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# -- the page ---------------------------------------------------------------------------------
_STYLE = """
:root { color-scheme: light; }
body { font-family: __FONT__; color: #1d1d1f; background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 980px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 0 0 12px; }
h3 { font-size: 1rem; margin: 18px 0 6px; }
section { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 16px 20px;
  margin: 16px 0; }
.meta { color: #555; margin: 0; overflow-wrap: anywhere; }
.alert { background: #fff2ee; border-color: #d55e00; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
  background: none; border: none; padding: 0; }
.tile { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 12px 14px; }
.tile .value { font-size: 1.35rem; font-weight: 600; }
.tile .what { color: #555; font-size: 0.85rem; }
svg.chart { display: block; height: auto; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(400px, 1fr)); gap: 8px 24px; }
figure { margin: 0; }
figcaption { color: #555; font-size: 0.85rem; margin-top: 2px; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid #eceef1; }
th { color: #555; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; unicode-bidi: plaintext; max-height: 12em;
  overflow: auto; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 0.82rem; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 6px;
  vertical-align: baseline; }
.none { color: #888; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
footer { color: #888; font-size: 0.8rem; text-align: center; }
""".replace("__FONT__", _FONT)


def render_html(summary: RunSummary, facts: TableFacts | None = None) -> str:
    """The whole page; `facts` from read_facts (None: the summary's parts only)."""
    facts = facts or TableFacts()
    title = f"grok-batch run {summary.run_key}"
    body = [
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="meta">model <code>{_e(summary.model)}</code> · mode {_e(summary.mode)} · '
        f"{summary.rows:,} rows · {summary.rounds} round(s)</p>",
        f'<p class="meta">input <code>{_e(summary.input_path)}</code> → output '
        f"<code>{_e(summary.output_path)}</code></p></header>",
    ]
    if summary.rejected_files:
        items = "".join(f"<li>{_e(text)}</li>" for text in summary.rejected_files)
        body.append(
            '<section class="alert" id="rejected-files"><h2>The service rejected input file(s); '
            f"their rows failed</h2><ul>{items}</ul></section>"
        )
    body += [_tiles(summary), _status_section(summary), _cost_section(summary)]
    if facts.distributions or facts.histograms or facts.free_text:
        body.append(_answers_section(facts))
    body.append(_examples_section(summary, facts))
    if summary.error_examples:
        body.append(_errors_section(summary))
    if summary.batches:
        body.append(_batches_section(summary))
    body.append("<footer>written by grok-batch · self-contained: no script, nothing loaded</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


def _tile(value: str, what: str) -> str:
    return f'<div class="tile"><div class="value">{_e(value)}</div><div class="what">{_e(what)}</div></div>'


def _tiles(summary: RunSummary) -> str:
    answered = summary.by_status.get(SUCCEEDED, 0)
    share = f"{100.0 * answered / summary.rows:.1f}%" if summary.rows else "–"
    cost = f"${summary.cost_usd:,.4f}" if summary.cost_known else "unknown"
    tokens = summary.tokens
    output_tokens = tokens.get("completion_tokens", 0) + tokens.get("reasoning_tokens", 0)
    tiles = [
        _tile(f"{summary.rows:,}", "rows"),
        _tile(share, f"succeeded ({answered:,} rows)"),
        _tile(cost, "cost"),
        _tile(f"{tokens.get('prompt_tokens', 0):,}", "input tokens"),
        _tile(f"{output_tokens:,}", "output tokens (incl. reasoning)"),
    ]
    if summary.from_cache:
        tiles.append(
            _tile(f"{summary.from_cache:,}", f"rows from the cache (saved ${summary.saved_usd:,.4f})")
        )
    return f'<section class="tiles" id="overview">{"".join(tiles)}</section>'


def _status_section(summary: RunSummary) -> str:
    return (
        f'<section id="status"><h2>Rows by status</h2>{status_chart_svg(summary.by_status)}'
        f'<p class="meta">{summary.rows:,} rows in all.</p></section>'
    )


def _cost_section(summary: RunSummary) -> str:
    lines = cost_lines(summary) + service_files_lines(summary)
    items = "".join(
        f"<li>{_e(line.removeprefix('- ').replace('**', '').replace('`', ''))}</li>" for line in lines
    )
    tokens = summary.tokens
    bars = [
        ("prompt", tokens.get("prompt_tokens", 0), "#56B4E9"),
        ("of which cached", tokens.get("cached_tokens", 0), "#A6D5F0"),
        ("completion", tokens.get("completion_tokens", 0), "#0072B2"),
        ("reasoning", tokens.get("reasoning_tokens", 0), "#8E6BBF"),
    ]
    chart = bar_chart("token-chart", "Tokens this run paid for", bars, shares=False)
    return f'<section id="cost"><h2>Cost and tokens</h2><ul>{items}</ul><h3>Tokens</h3>{chart}</section>'


def _answers_section(facts: TableFacts) -> str:
    figures = []
    for i, dist in enumerate(facts.distributions):
        bars = [(label, count, _VALUE_COLOR) for label, count in dist.bars()]
        rows = sum(count for _, count in dist.bars())
        chart = bar_chart(f"dist-{i}", f"{dist.name}: values", bars, compact=True)
        figures.append(
            f'<figure class="distribution" data-column="{_e(dist.name)}">'
            f"<h3><code>{_e(dist.name)}</code></h3>"
            f"{chart}<figcaption>{_e(dist.kind)} · {rows:,} succeeded rows</figcaption></figure>"
        )
    for i, hist in enumerate(facts.histograms):
        if not hist.count:
            caption = "no values"
        else:
            caption = (
                f"{'integer' if hist.integer else 'number'} · {hist.count:,} values · min "
                f"{_number(hist.low or 0)} · mean {_number(hist.mean or 0)} · max {_number(hist.high or 0)}"
            )
        figures.append(
            f'<figure class="histogram" data-column="{_e(hist.name)}"><h3><code>{_e(hist.name)}</code></h3>'
            f"{histogram_svg(f'hist-{i}', hist)}<figcaption>{_e(caption)}</figcaption></figure>"
        )
    text = ""
    if facts.free_text:
        names = ", ".join(f"<code>{_e(name)}</code>" for name in facts.free_text)
        text = f'<p class="meta">Free-text columns: {names} (see the examples below).</p>'
    return (
        f'<section id="answers"><h2>Answers</h2><div class="columns">{"".join(figures)}</div>{text}</section>'
    )


def _cell(text: str | None) -> str:
    if text is None:
        return '<td><span class="none">–</span></td>'
    shown = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text):,} characters)"
    return f'<td><div class="text">{_e(shown)}</div></td>'


def _examples_section(summary: RunSummary, facts: TableFacts) -> str:
    parts = ['<section id="examples"><h2>Examples by status</h2>']
    for status, count in summary.by_status.items():
        if count <= 0:
            continue
        color = STATUS_COLORS.get(status, _OTHER_COLOR)
        parts.append(
            f'<h3 data-status="{_e(status)}"><span class="swatch" style="background:{color}"></span>'
            f'{_e(status)} <span class="meta">({count:,} rows)</span></h3>'
        )
        rows = facts.examples.get(status) or []
        if not rows:
            parts.append('<p class="none">no example read</p>')
            continue
        body = "".join(
            f'<tr class="example" data-status="{_e(status)}">'
            f"<td><code>{_e(_short(row.ident, 80))}</code></td>"
            f"{_cell(row.response)}{_cell(row.error)}</tr>"
            for row in rows
        )
        parts.append(f"<table><tr><th>row</th><th>answer</th><th>error</th></tr>{body}</table>")
    parts.append("</section>")
    return "".join(parts)


def _errors_section(summary: RunSummary) -> str:
    body = "".join(
        f'<tr><td><div class="text">{_e(_short(error, MAX_TEXT))}</div></td><td class="num">{count:,}</td>'
        f"<td><code>{_e(example)}</code></td></tr>"
        for error, count, example in summary.error_examples
    )
    return (
        '<section id="errors"><h2>Why rows were not answered</h2><table><tr><th>error</th><th>rows</th>'
        f"<th>example custom_id</th></tr>{body}</table></section>"
    )


def _batches_section(summary: RunSummary) -> str:
    shown = summary.batches[:MAX_BATCH_ROWS]
    body = "".join(
        f'<tr><td><code>{_e(b["batch"])}</code></td><td class="num">{_e(b["round"])}</td>'
        f'<td class="num">{_e(b["requests"])}</td><td>{_e(b["state"])}</td>'
        f"<td>{_e(b['message'] or '')}</td></tr>"
        for b in shown
    )
    more = len(summary.batches) - len(shown)
    note = f'<p class="meta">and {more:,} more (see the markdown report)</p>' if more > 0 else ""
    return (
        '<section id="batches"><details><summary><h2 style="display:inline">'
        f"Batches ({len(summary.batches):,})</h2></summary><table><tr><th>batch</th><th>round</th>"
        f"<th>requests</th><th>state</th><th>message</th></tr>{body}</table>{note}</details></section>"
    )


def render_html_report(
    summary: RunSummary,
    output: Path,
    *,
    answer_schema: dict[str, Any] | None = None,
    prefix: str = "",
    id_column: str | None = None,
) -> str:
    """The HTML report of a finished run, from its summary and its output table."""
    facts = read_facts(
        output, summary.by_status, answer_schema=answer_schema, prefix=prefix, id_column=id_column
    )
    return render_html(summary, facts)
