"""The HTML report of a real run (the sample reviews through the structured job, against the
emulator, some rows failed, invalid or rejected), rendered by a real headless browser:
Debian's Chromium, which `.ci/run` installs when it is missing. Without it these tests fail,
never skip.

The browser's console goes to its stderr (`--enable-logging=stderr`): a script error, or a
load the page's Content-Security-Policy blocked, would show there; a control page proves the
check sees such a line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from emulator import EmulatorConfig, RunningEmulator
from tasks.spec.job import JobSpec
from tasks.stages.report import RunSummary
from tasks.stages.report_html import CSP, html_report_path, render_html_report
from tests.helpers import EMULATOR_KEY, run_to_end

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1100,1400",
    "--enable-logging=stderr",
    "--v=0",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]")  # Chromium's line for a console message


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Chromium is not installed. This test renders the HTML report in a real headless browser; "
            "`.ci/run` installs Debian's package when it is missing (locally: "
            "apt-get update && apt-get install -y chromium)",
            pytrace=False,
        )
    return path


def browse(page: Path, profile: Path, *args: str) -> tuple[str, list[str]]:
    """The page's DOM after loading (or what `args` ask for instead), and its console lines."""
    done = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *(args or ["--dump-dom"]), page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, [line for line in done.stderr.splitlines() if CONSOLE.search(line)]


class Tree(HTMLParser):
    """Elements of a DOM dump with their attributes and the text inside each."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self.open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": [e["tag"] for e in self.open]}
        element["within"] = [e["attrs"].get("id") for e in self.open if e["attrs"].get("id")]
        self.elements.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if any(e["tag"] == tag for e in self.open):
            while self.open.pop()["tag"] != tag:
                pass

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element["text"] += data

    def find(self, tag: str, within: str | None = None, **attrs: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag
            and (within is None or within in e["within"])
            and all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def tree(dom: str) -> Tree:
    parsed = Tree()
    parsed.feed(dom)
    parsed.close()
    return parsed


@dataclass
class Run:
    summary: RunSummary
    output: Path
    run_dir: Path


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The sample reviews through the structured sample job, one attempt, 10% failing and 10%
    breaking the schema: succeeded, failed, invalid_output and rejected rows."""
    tmp = tmp_path_factory.mktemp("html-report")
    config = EmulatorConfig(
        api_key=EMULATOR_KEY,
        parse_delay_s=0.05,
        processing_s=0.2,
        retry_after_s=0.01,
        fail_rate=0.1,
        invalid_output_rate=0.1,
        seed=7,
    )
    spec = yaml.safe_load((SAMPLES / "reviews.structured.job.yaml").read_text(encoding="utf-8"))
    job = JobSpec.model_validate({**spec, "max_attempts": 1, "retry_invalid_output": False})
    with RunningEmulator(config) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("XAI_BASE_URL", server.url)
        env.setenv("XAI_API_KEY", EMULATOR_KEY)
        data = tmp / "data"
        data.mkdir()
        summary, handle = run_to_end(SAMPLES / "reviews.csv", job, data, tmp / "out" / "reviews.parquet")
    yield Run(summary, tmp / "out" / "reviews.parquet", handle.run_dir)


def test_the_report_renders_without_console_messages_and_shows_every_chart(
    real_run: Run, tmp_path: Path
) -> None:
    page = html_report_path(real_run.output)
    assert page.read_bytes() == (real_run.run_dir / "report.html").read_bytes()  # the run dir's copy
    present = {status: count for status, count in real_run.summary.by_status.items() if count}
    assert {"succeeded", "failed", "invalid_output", "rejected"} <= set(present)

    dom, console = browse(page, tmp_path / "profile")
    assert console == []
    parsed = tree(dom)
    assert [e["text"] for e in parsed.find("title") if "svg" not in e["parents"]] == [
        f"grok-batch run {real_run.summary.run_key}"
    ]
    bars = parsed.find("g", within="status-chart", **{"class": "bar"})
    assert [(b["attrs"]["data-label"], int(b["attrs"]["data-count"])) for b in bars] == list(present.items())
    for bar, (status, count) in zip(bars, present.items(), strict=True):
        assert bar["text"].startswith(f"{status}: {count:,}")  # the tooltip, then the label and the count
        assert f"{status}{count:,} · {100 * count / real_run.summary.rows:.1f}%" in bar["text"]
    assert len(parsed.find("rect", within="status-chart", **{"class": "bar"})) == len(present)

    figures = [e["attrs"]["data-column"] for e in parsed.find("figure")]
    assert figures == ["grok_sentiment", "grok_mentions_shipping", "grok_rating"]
    table = pq.read_table(real_run.output, columns=["grok_status", "grok_sentiment", "grok_rating"])
    succeeded = table.filter(pc.equal(table.column("grok_status"), "succeeded"))
    sentiments = {
        item["values"]: item["counts"]
        for item in pc.value_counts(succeeded.column("grok_sentiment")).to_pylist()
    }
    shown = parsed.find("g", within="dist-0", **{"class": "bar"})
    assert {b["attrs"]["data-label"]: int(b["attrs"]["data-count"]) for b in shown} == {
        value: sentiments.get(value, 0) for value in ("positive", "negative", "neutral")
    }
    ratings = succeeded.column("grok_rating").drop_null().to_pylist()
    bins = parsed.find("g", within="hist-0", **{"class": "bin"})
    assert [int(b["attrs"]["data-count"]) for b in bins] == [
        ratings.count(v) for v in range(min(ratings), max(ratings) + 1)
    ]

    examples = parsed.find("tr", **{"class": "example"})
    assert {e["attrs"]["data-status"] for e in examples} == set(present)
    assert all(e["text"].startswith("R0") for e in examples)  # the job's id column names the row

    shot = tmp_path / "report.png"
    browse(page, tmp_path / "profile", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot of the report: {shot}")


PROBE = """<script>
const rows = [...document.querySelectorAll('#status-chart g.bar')].map((g) => {
  const bar = g.querySelector('rect').getBoundingClientRect();
  const label = g.querySelector('text').getBoundingClientRect();
  const hit = document.elementFromPoint(bar.x + bar.width / 2, bar.y + bar.height / 2);
  return {status: g.dataset.label, width: bar.width, height: bar.height,
          onTop: hit === g.querySelector('rect'), labelRight: label.right, barLeft: bar.left,
          fill: getComputedStyle(g.querySelector('rect')).fill};
});
document.body.dataset.probe = JSON.stringify({rows, viewport: innerHeight});
</script>"""


def test_each_status_bar_is_drawn_on_screen_with_its_width_and_colour(real_run: Run, tmp_path: Path) -> None:
    """A copy of the report with a probe script (the report itself allows none) asks the
    browser's layout where each bar landed."""
    source = html_report_path(real_run.output).read_text(encoding="utf-8")
    assert source.count(CSP) == 1
    probe = tmp_path / "probe.html"
    scripts = CSP.replace("img-src data:", "script-src 'unsafe-inline'")  # still nothing loaded
    probe.write_text(source.replace(CSP, scripts).replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom, console = browse(probe, tmp_path / "profile")
    assert console == []
    found = tree(dom).find("body")[0]["attrs"].get("data-probe")
    assert found, "the probe did not run"
    rows = json.loads(found)["rows"]
    present = {status: count for status, count in real_run.summary.by_status.items() if count}
    assert [row["status"] for row in rows] == list(present)
    colours = {
        "succeeded": "rgb(0, 158, 115)",
        "failed": "rgb(213, 94, 0)",
        "invalid_output": "rgb(230, 159, 0)",
    }
    colours["rejected"] = "rgb(0, 114, 178)"
    top = max(present.values())
    for row in rows:
        assert row["onTop"], row  # visible: nothing covers the bar's middle
        assert row["height"] > 10 and row["labelRight"] < row["barLeft"], row
        assert row["fill"] == colours[row["status"]]
        widest = next(r["width"] for r in rows if present[r["status"]] == top)
        assert row["width"] == pytest.approx(max(widest * present[row["status"]] / top, 2), abs=2)


def test_a_hostile_answer_stays_text_in_the_browser(tmp_path: Path) -> None:
    hostile = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    out = tmp_path / "out.parquet"
    pq.write_table(
        pa.table(
            {
                "custom_id": ["c0", "c1"],
                "status": ["succeeded", "failed"],
                "response": [hostile, None],
                "error": [None, hostile],
            }
        ),
        out,
    )
    summary = RunSummary(
        run_key="hostile",
        input_path="in.csv",
        output_path=str(out),
        model="grok-4.3",
        rows=2,
        by_status={"succeeded": 1, "failed": 1},
        tokens={},
        cost_usd=0.0,
        rounds=1,
        error_examples=[(hostile, 1, "c1")],
    )
    page = html_report_path(out)
    page.write_text(render_html_report(summary, out), encoding="utf-8")
    dom, console = browse(page, tmp_path / "profile")
    assert console == []  # no script ran, no image was even asked for
    parsed = tree(dom)
    assert not parsed.find("script") and not parsed.find("img")
    assert [e["text"] for e in parsed.find("title") if "svg" not in e["parents"]] == [
        "grok-batch run hostile"
    ]
    cells = [e["text"] for e in parsed.find("div", **{"class": "text"})]
    assert cells.count(hostile) == 3  # the answer, the error, the top error: as text


def test_the_console_check_sees_what_a_page_logs(tmp_path: Path) -> None:
    """The control: without it, `console == []` above could pass because nothing is captured."""
    page = tmp_path / "logs.html"
    page.write_text(
        '<!DOCTYPE html><html><body><script>console.error("probe-7f3a")</script>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg></body></html>',
        encoding="utf-8",
    )
    _, console = browse(page, tmp_path / "profile")
    assert len(console) == 1 and "probe-7f3a" in console[0]


IMAGE_PROBE = """<img id="chart" src="{src}">
<script>
addEventListener('load', () => {{
  const img = document.getElementById('chart');
  document.body.dataset.probe = JSON.stringify({{width: img.naturalWidth, height: img.naturalHeight}});
}});
</script>"""


def test_the_prefect_report_artifact_shows_the_status_chart_as_an_image(
    real_run: Run, prefect_harness: None, tmp_path: Path
) -> None:
    """The markdown artifact carries the chart as a data-URI SVG right under its title (Prefect's
    UIs draw data:image/ sources in markdown), names the HTML report, and the image decodes."""
    from prefect import flow
    from prefect.artifacts import Artifact

    from flows.artifacts import publish_summary

    @flow(name="publish-report-artifact")
    def publish() -> None:
        publish_summary(real_run.summary, real_run.summary.run_key)

    publish()
    artifact: Any = Artifact.get(key=f"grok-batch-report-{real_run.summary.run_key}")  # sync here
    assert artifact is not None and isinstance(artifact.data, str)
    lines = artifact.data.split("\n")
    assert lines[0] == f"# grok-batch run {real_run.summary.run_key}"
    image = re.fullmatch(r"!\[rows by status\]\((data:image/svg\+xml;base64,[A-Za-z0-9+/=]+)\)", lines[2])
    assert image, lines[2][:200]
    assert f"All charts: `{html_report_path(real_run.output)}`" in lines
    assert "| status | rows |" in lines  # the markdown report follows

    page = tmp_path / "image.html"
    page.write_text(
        f"<!DOCTYPE html><html><body>{IMAGE_PROBE.format(src=image[1])}</body></html>", encoding="utf-8"
    )
    dom, console = browse(page, tmp_path / "profile")
    assert console == []
    found = tree(dom).find("body")[0]["attrs"].get("data-probe")
    assert found and json.loads(found)["width"] == 720, found  # a real image of the chart's size
