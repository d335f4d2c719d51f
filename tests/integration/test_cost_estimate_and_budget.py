"""Money: what each row cost (the service's bill, the catalog's estimate beside it), the
report comparing the two, the estimate before anything is sent, the max_cost_usd budget and
the batch-model preflight.

Everything runs the real pipeline against the emulator over HTTP. The emulator's usage for a
request is fixed by its text (tokens ~ characters / 4, the system message billed as cached
input, reasoning models think 2x their visible answer), so the token counts below are literal;
it bills like xAI (cost_in_usd_ticks: the catalog's standard prices, less the model's batch
discount for batch results), times its `bill_factor`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from emulator import RunningEmulator
from emulator.completions import chat_completion
from emulator.config import DEFAULT_BATCH_MODELS
from flows.cli import app
from tasks import runner, start
from tasks.infra.errors import GrokBatchError, InputError, JobSpecError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.spec.job import JobSpec, build_job
from tasks.stages.report import RunSummary
from tests.helpers import run_to_end, write_csv

cli = CliRunner()

SYSTEM = "You are a terse review classifier."  # 34 chars: 8 + 3 = 11 tokens, billed as cached
TEXTS = [
    "I love it, works great and arrived fast",  # prompt 26 tokens (11 cached), answer 9
    "Broke after two days, I want a refund",  # prompt 25 tokens (11 cached), answer 9
    "It is a chair with four legs",  # prompt 23 tokens (11 cached), answer 9
]
# Sync pacing defaults to 300 requests a minute (0.2 s apart); tests need no pacing.
FAST_SYNC = {"sync_requests_per_minute": 60_000}


def job(**fields: object) -> JobSpec:
    base = {"model": "grok-4.3", "system": SYSTEM, "prompt": "Classify: {{ text }}", "id_column": "id"}
    return build_job(None, {**base, **FAST_SYNC, **fields})


def reviews(tmp_path: Path, name: str = "in.csv", count: int = 12) -> Path:
    return write_csv(tmp_path / name, [{"id": f"r{i:02d}", "text": TEXTS[i % 3]} for i in range(count)])


def by_id(output: Path) -> dict[str, dict]:
    return {row["id"]: row for row in pq.read_table(output).to_pylist()}


def report_lines(output: Path) -> tuple[str, str | None]:
    """(the cost line, the catalog-estimate line or None) from the report beside the output."""
    text = runner.report_path(output).read_text(encoding="utf-8")
    cost = re.search(r"^- cost: .*$", text, re.MULTILINE)
    estimate = re.search(r"^- catalog estimate: .*$", text, re.MULTILINE)
    assert cost is not None, text
    return cost.group(0), estimate.group(0) if estimate else None


def dollars(line: str) -> float:
    match = re.search(r"\$([0-9]+\.[0-9]+)", line)
    assert match is not None, line
    return float(match.group(1))


def flagged(line: str) -> bool:
    """The report flags a disagreement in bold on the estimate's line."""
    return "**" in line


def cost_warnings(text: str) -> list[str]:
    """Lines of a report or a terminal that warn about the cost or the catalog."""
    return [
        line
        for line in text.splitlines()
        if "against the catalog" in line or ("**" in line and "cost" in line) or "model catalog" in line
    ]


# -- cost per row ----------------------------------------------------------------------------
def test_batch_rows_cost_the_discounted_catalog_prices_of_their_own_tokens(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "batch.parquet"
    run_to_end(reviews(tmp_path), job(), data_dir, out)[0]
    rows = by_id(out)
    assert len(rows) == 12
    # The emulator's usage for each text, literally (prompt, cached, completion, reasoning).
    assert [
        (rows[k]["prompt_tokens"], rows[k]["cached_tokens"], rows[k]["completion_tokens"])
        for k in ("r00", "r01", "r02")
    ] == [(26, 11, 9), (25, 11, 9), (23, 11, 9)]
    assert {rows[k]["reasoning_tokens"] for k in rows} == {0}
    # The catalog's estimate, grok-4.3 batch: $1.00 input, $0.16 cached input, $2.00 output
    # per 1M (20% off standard). r00: (15 * 1.00 + 11 * 0.16 + 9 * 2.00) / 1e6 = 34.76e-6
    assert rows["r00"]["estimated_cost_usd"] == pytest.approx(34.76e-6, rel=1e-12)
    assert rows["r01"]["estimated_cost_usd"] == pytest.approx(33.76e-6, rel=1e-12)  # 14 + 1.76 + 18
    assert rows["r02"]["estimated_cost_usd"] == pytest.approx(31.76e-6, rel=1e-12)  # 12 + 1.76 + 18
    for key in ("r03", "r07", "r11"):  # the same formula from each row's own columns
        r = rows[key]
        uncached = r["prompt_tokens"] - r["cached_tokens"]
        billed_output = r["completion_tokens"] + r["reasoning_tokens"]
        expected = (uncached * 1.00 + r["cached_tokens"] * 0.16 + billed_output * 2.00) / 1e6
        assert r["estimated_cost_usd"] == pytest.approx(expected, rel=1e-12), key
        assert r["attempts"] == 1 and r["from_cache"] is False
    for key, r in rows.items():  # the cost is the bill: the service's figure for the row
        assert r["cost_usd"] == r["service_cost_usd"] is not None, key


def test_the_same_rows_in_mode_sync_cost_standard_prices(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "sync.parquet"
    summary = run_to_end(reviews(tmp_path), job(mode="sync"), data_dir, out)[0]
    assert summary.mode == "sync"
    assert emulator.state.count("POST", "/v1/files") == 0
    assert emulator.state.count("POST", "/v1/chat/completions", 200) == 12
    rows = by_id(out)
    usage = [
        (rows[k]["prompt_tokens"], rows[k]["cached_tokens"], rows[k]["completion_tokens"])
        for k in ("r00", "r01", "r02")
    ]
    assert usage == [(26, 11, 9), (25, 11, 9), (23, 11, 9)]  # the same tokens as in batch
    # grok-4.3 standard: $1.25 input, $0.20 cached input, $2.50 output per 1M.
    r00 = rows["r00"]["estimated_cost_usd"]
    assert r00 == pytest.approx((15 * 1.25 + 11 * 0.20 + 9 * 2.50) / 1e6, rel=1e-12)
    assert rows["r00"]["estimated_cost_usd"] == pytest.approx(43.45e-6, rel=1e-12)
    assert rows["r01"]["estimated_cost_usd"] == pytest.approx(42.20e-6, rel=1e-12)  # 17.5 + 2.2 + 22.5
    assert rows["r02"]["estimated_cost_usd"] == pytest.approx(39.70e-6, rel=1e-12)  # 15 + 2.2 + 22.5
    for key, r in rows.items():
        uncached = r["prompt_tokens"] - r["cached_tokens"]
        billed_output = r["completion_tokens"] + r["reasoning_tokens"]
        expected = (uncached * 1.25 + r["cached_tokens"] * 0.20 + billed_output * 2.50) / 1e6
        assert r["estimated_cost_usd"] == pytest.approx(expected, rel=1e-12), key
        assert r["cost_usd"] == r["service_cost_usd"] == pytest.approx(expected, rel=1e-9), key  # billed


def test_reasoning_tokens_are_billed_as_output(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "reasoning.parquet"
    run_to_end(reviews(tmp_path, count=10), job(model="grok-4.20-0309-reasoning"), data_dir, out)[0]
    rows = by_id(out)
    r = rows["r00"]
    usage = (r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"], r["reasoning_tokens"])
    assert usage == (26, 11, 9, 18)
    # grok-4.20-0309-reasoning batch: 1.00 / 0.16 / 2.00; output = 9 visible + 18 reasoning.
    # (15 * 1.00 + 11 * 0.16 + 27 * 2.00) / 1e6 = 70.76e-6, not 34.76e-6 (visible only).
    assert r["estimated_cost_usd"] == pytest.approx(70.76e-6, rel=1e-12)
    assert r["cost_usd"] == r["service_cost_usd"] == pytest.approx(70.76e-6, rel=1e-9)  # billed alike
    for key, row in rows.items():
        assert row["reasoning_tokens"] == 2 * row["completion_tokens"] > 0, key
        uncached = row["prompt_tokens"] - row["cached_tokens"]
        expected = (
            uncached * 1.00
            + row["cached_tokens"] * 0.16
            + (row["completion_tokens"] + row["reasoning_tokens"]) * 2.00
        ) / 1e6
        assert row["estimated_cost_usd"] == pytest.approx(expected, rel=1e-12), key


def test_a_model_without_batch_discount_costs_the_same_in_batch_and_sync(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = reviews(tmp_path, count=10)
    batch_out, sync_out = tmp_path / "batch.parquet", tmp_path / "sync.parquet"
    run_to_end(src, job(model="grok-4-1-fast-reasoning"), data_dir, batch_out)[0]
    # cache off: otherwise the sync run would take every answer from the batch run, for $0
    run_to_end(src, job(model="grok-4-1-fast-reasoning", mode="sync", cache=False), data_dir, sync_out)[0]
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert emulator.state.count("POST", "/v1/chat/completions", 200) == 10
    batch, sync = by_id(batch_out), by_id(sync_out)
    # grok-4-1-fast-reasoning: 0.20 / 0.05 / 0.50 in both modes; 9 visible + 18 reasoning.
    # (15 * 0.20 + 11 * 0.05 + 27 * 0.50) / 1e6 = 17.05e-6
    assert batch["r00"]["estimated_cost_usd"] == pytest.approx(17.05e-6, rel=1e-12)
    assert sync["r00"]["estimated_cost_usd"] == pytest.approx(17.05e-6, rel=1e-12)
    for key in batch:
        assert sync[key]["from_cache"] is False
        assert batch[key]["estimated_cost_usd"] == pytest.approx(sync[key]["estimated_cost_usd"], rel=1e-12)
        assert batch[key]["cost_usd"] == sync[key]["cost_usd"], key  # and the service bills both alike
    assert sum(r["cost_usd"] for r in batch.values()) == pytest.approx(
        sum(r["cost_usd"] for r in sync.values()), rel=1e-12
    )


# -- the report: the bill, the catalog's estimate beside it, a flag when they disagree --------
CATALOG_WITHOUT_BATCH_DISCOUNT = """\
models:
  grok-4.3:
    provider: xai
    context_window: 1000000
    prices: {input: 1.25, cached_input: 0.20, output: 2.50}
    batch_prices: {input: 1.25, cached_input: 0.20, output: 2.50}
    batch_accepted: true
    source: "test: a catalog that has not heard of the batch discount"
    as_of: "2026-11"
"""


def _totals(output: Path) -> tuple[float, float, float]:
    """(sum of cost_usd, of estimated_cost_usd, of service_cost_usd) over the output."""
    table = pq.read_table(output)
    return (
        sum(table.column("cost_usd").to_pylist()),
        sum(table.column("estimated_cost_usd").to_pylist()),
        sum(table.column("service_cost_usd").to_pylist()),
    )


def _flag_expected(estimate: float, bill: float) -> bool:
    return abs(estimate - bill) > 0.01 * max(estimate, bill)


def test_a_batch_run_costs_what_the_service_billed_and_the_report_warns_of_nothing(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    # Like xAI, the emulator bills grok-4.3's batch results 20% off, as the catalog says.
    out = tmp_path / "batch.parquet"
    summary = run_to_end(reviews(tmp_path), job(), data_dir, out)[0]
    cost, estimate, service = _totals(out)
    # 4 x (34.76 + 33.76 + 31.76) e-6, billed and estimated alike
    assert cost == service == pytest.approx(401.12e-6, rel=1e-9)
    assert estimate == pytest.approx(401.12e-6, rel=1e-9)
    assert summary.cost_usd == pytest.approx(401.12e-6, rel=1e-9)
    assert summary.estimated_cost_usd == pytest.approx(401.12e-6, rel=1e-9)
    cost_line, estimate_line = report_lines(out)
    assert cost_line == "- cost: $0.000401 (billed by the service)"
    assert estimate_line == "- catalog estimate: $0.000401 (catalog batch prices x tokens used)"
    assert _flag_expected(estimate, cost) is False and not flagged(estimate_line)
    assert cost_warnings(runner.report_path(out).read_text(encoding="utf-8")) == []


def test_a_service_billing_30_percent_above_the_catalog_is_flagged(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(bill_factor=1.3)
    out = tmp_path / "batch.parquet"
    summary = run_to_end(reviews(tmp_path), job(), data_dir, out)[0]
    cost, estimate, service = _totals(out)
    assert estimate == pytest.approx(401.12e-6, rel=1e-9)  # the catalog's figure, as before
    assert cost == service == pytest.approx(1.3 * 401.12e-6, rel=1e-9)  # what the service billed
    assert summary.cost_usd == pytest.approx(1.3 * 401.12e-6, rel=1e-9)  # the run's total is the bill
    for row in by_id(out).values():
        assert row["cost_usd"] == row["service_cost_usd"], row["id"]
        assert row["cost_usd"] == pytest.approx(1.3 * row["estimated_cost_usd"], rel=1e-9), row["id"]
    cost_line, estimate_line = report_lines(out)
    assert cost_line == "- cost: $0.000521 (billed by the service)"
    assert estimate_line is not None and dollars(estimate_line) == pytest.approx(0.000401, abs=1e-12)
    assert _flag_expected(estimate, cost) is True
    assert flagged(estimate_line) and "+30% against the catalog's estimate" in estimate_line, estimate_line
    assert cost_warnings(runner.report_path(out).read_text(encoding="utf-8")) == [estimate_line]


@pytest.mark.parametrize(("factor", "flag"), [(1.009, False), (1.011, True), (0.989, True)])
def test_only_a_gap_over_1_percent_is_flagged(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, factor: float, flag: bool
) -> None:
    emulator.configure(bill_factor=factor)
    out = tmp_path / "batch.parquet"
    run_to_end(reviews(tmp_path), job(), data_dir, out)
    _, estimate_line = report_lines(out)
    assert estimate_line is not None and flagged(estimate_line) is flag, estimate_line


@pytest.mark.usefixtures("prefect_harness")
def test_the_terminal_shows_the_bill_and_no_cost_warning_against_the_default_emulator(
    tmp_path: Path, emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    def run(src: Path, out: Path, *extra: str) -> Result:
        args = [
            "run",
            str(src),
            "--model",
            "grok-4.3",
            "--system",
            SYSTEM,
            "--prompt",
            "Classify: {{ text }}",
        ]
        args += ["--id-column", "id", "-o", str(out), "--data-dir", str(tmp_path / "d"), *extra]
        return cli.invoke(app, [*args, "--poll-interval", "0.2"])

    out = tmp_path / "cli.parquet"
    with caplog.at_level(logging.WARNING):
        result = run(reviews(tmp_path), out)
    assert result.exit_code == 0, result.output
    terminal = " ".join(result.output.split())
    assert "cost: $0.000401 (billed by the service)" in terminal
    assert "catalog estimate: $0.000401 (catalog batch prices x tokens used)" in terminal
    assert cost_warnings(result.output) == []
    assert cost_warnings(runner.report_path(out).read_text(encoding="utf-8")) == []
    assert [r.getMessage() for r in caplog.records if "catalog" in r.getMessage()] == []
    # and the same command against a service billing 30% more says so
    emulator.configure(bill_factor=1.3)
    again = run(reviews(tmp_path, "again.csv", count=9), tmp_path / "again.parquet", "--no-cache")
    assert again.exit_code == 0, again.output
    assert "cost: $0.000391 (billed by the service)" in " ".join(again.output.split())  # 1.3 x 300.84e-6
    assert "+30% against the catalog's estimate" in " ".join(again.output.split())


def test_the_same_rows_in_mode_sync_are_billed_at_standard_prices_and_not_flagged(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "sync.parquet"
    run_to_end(reviews(tmp_path), job(mode="sync"), data_dir, out)[0]
    cost, estimate, service = _totals(out)
    assert cost == service == pytest.approx(501.40e-6, rel=1e-9)  # 4 x (43.45 + 42.20 + 39.70) e-6
    assert estimate == pytest.approx(501.40e-6, rel=1e-9)
    cost_line, estimate_line = report_lines(out)
    assert cost_line == "- cost: $0.000501 (billed by the service)"
    assert estimate_line == "- catalog estimate: $0.000501 (catalog standard prices x tokens used)"
    assert _flag_expected(estimate, cost) is False and not flagged(estimate_line)


@pytest.mark.parametrize("how", ["env", "job"])
def test_the_catalog_given_by_env_or_job_makes_the_estimate_the_bill_is_checked_against(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # This catalog prices grok-4.3's batch results at standard prices; the service gives the
    # 20% discount. The bill stays the bill; the estimate follows the catalog, and the gap shows.
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG_WITHOUT_BATCH_DISCOUNT, encoding="utf-8")
    if how == "env":
        monkeypatch.setenv("GROK_BATCH_CATALOG", str(catalog))
        spec = job()
    else:
        spec = job(catalog=str(catalog))
    out = tmp_path / "batch.parquet"
    summary = run_to_end(reviews(tmp_path), spec, data_dir, out)[0]
    assert summary.mode == "batch" and emulator.state.count("POST", "/v1/batches", 200) == 1
    rows = by_id(out)
    assert rows["r00"]["estimated_cost_usd"] == pytest.approx(43.45e-6, rel=1e-12)  # this catalog's prices
    assert rows["r00"]["cost_usd"] == pytest.approx(34.76e-6, rel=1e-12)  # what the service billed
    cost, estimate, service = _totals(out)
    assert cost == service == pytest.approx(401.12e-6, rel=1e-9)
    assert estimate == pytest.approx(501.40e-6, rel=1e-9)
    cost_line, estimate_line = report_lines(out)
    assert cost_line == "- cost: $0.000401 (billed by the service)"
    assert estimate_line is not None and dollars(estimate_line) == pytest.approx(0.000501, abs=1e-12)
    assert _flag_expected(estimate, cost) is True
    assert flagged(estimate_line) and "-20% against the catalog's estimate" in estimate_line, estimate_line


def test_report_totals_count_every_billed_attempt_of_a_retried_row(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    # Every answer is off-schema, so each row is answered (and billed) twice: round 1, then
    # the retry. The report's totals should say what the run cost, both rounds. The service
    # bills 30% above the catalog, so the bill and the estimate are told apart.
    emulator.configure(invalid_output_rate=1.0, bill_factor=1.3)
    spec = job(
        columns={"sentiment": ["positive", "negative", "neutral"]}, retry_invalid_output=True, max_attempts=2
    )
    out = tmp_path / "out.parquet"
    summary = run_to_end(reviews(tmp_path, count=12), spec, data_dir, out)[0]
    assert summary.rounds == 2 and summary.by_status["invalid_output"] == 12
    with emulator.state.lock:
        sent = [emulator.state.batches[i] for i in emulator.state.batch_order]
    assert [len(b.bodies) for b in sent] == [12, 12]
    billed_ticks = sum(
        chat_completion(body, 0, invalid_output_rate=1.0, batch=True, bill_factor=1.3)["usage"][
            "cost_in_usd_ticks"
        ]
        for batch in sent
        for body in batch.bodies
    )
    billed = billed_ticks / 1e10  # what the service reported across both rounds
    table = pq.read_table(out)
    per_row = sum(table.column("cost_usd").to_pylist())
    assert per_row == pytest.approx(billed, rel=1e-9)  # each row carries what all its attempts cost
    assert sum(table.column("service_cost_usd").to_pylist()) == pytest.approx(billed, rel=1e-9)
    assert summary.cost_usd == pytest.approx(billed, rel=1e-9), (
        f"report says the run cost ${summary.cost_usd:.6f}; the service billed ${billed:.6f}"
    )
    assert summary.service_cost_usd == pytest.approx(billed, rel=1e-9)
    # the catalog's estimate, both rounds, at batch prices
    assert sum(table.column("estimated_cost_usd").to_pylist()) == pytest.approx(billed / 1.3, rel=1e-6)
    assert summary.estimated_cost_usd == pytest.approx(billed / 1.3, rel=1e-6)
    cost_line, estimate_line = report_lines(out)
    assert dollars(cost_line) == pytest.approx(round(billed, 6), abs=1e-12)
    assert estimate_line is not None and "+30%" in estimate_line


# -- the estimate: nothing is sent ------------------------------------------------------------
def estimate_table(tmp_path: Path) -> Path:
    """20 rows: 19 prompts of exactly 48 bytes (12 tokens at 4 bytes a token), one empty row
    that is rejected before sending."""
    texts = [f"Row {i:02d}: the parcel came on time and it works ok." for i in range(20)]
    assert {len(t.encode()) for t in texts} == {48}
    texts[5] = ""
    return write_csv(tmp_path / "est.csv", [{"id": f"e{i:02d}", "text": t} for i, t in enumerate(texts)])


ESTIMATE_ARGS = ["--model", "grok-4.3", "--prompt", "{{ text }}"]


def test_estimate_prints_rows_tokens_and_both_prices_and_sends_nothing(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    src = estimate_table(tmp_path)
    data = tmp_path / "d"
    result = cli.invoke(
        app, ["estimate", str(src), *ESTIMATE_ARGS, "-p", "max_tokens=50", "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich may wrap long lines
    assert "rows 20: 19 to send, 0 from the row cache, 1 rejected before sending" in text
    # 19 prompts x (12 tokens of text + 4 for the message) = 304; 19 x max_tokens 50 = 950.
    assert "input tokens ≈ 304" in text
    assert "output tokens ≤ 950 (max_tokens per answer)" in text
    # batch: 19 x (16 x 1.00 + 50 x 2.00) / 1e6 = 0.002204
    # sync:  19 x (16 x 1.25 + 50 x 2.50) / 1e6 = 0.002755
    assert "cost at batch prices: $0.0022" in text
    assert "cost at standard (sync) prices: $0.0028" in text
    assert emulator.state.count("POST", "/v1/files") == 0
    assert emulator.state.count("POST", "/v1/batches") == 0
    assert emulator.state.request_log == []

    estimate = start.dry_run(
        TableSource(src),
        build_job(None, {"model": "grok-4.3", "prompt": "{{ text }}", "params": {"max_tokens": 50}}),
        data / "runs",
    )
    assert (estimate.rows, estimate.to_send, estimate.rejected, estimate.cached) == (20, 19, 1, 0)
    assert (estimate.prompt_tokens, estimate.output_tokens, estimate.output_assumed) == (304, 950, False)
    assert estimate.batch_usd == pytest.approx(0.002204, rel=1e-9)
    assert estimate.sync_usd == pytest.approx(0.002755, rel=1e-9)
    assert estimate.mode == "batch" and estimate.cost_usd == estimate.batch_usd
    assert emulator.state.request_log == []


def test_estimate_without_max_tokens_assumes_256_per_answer(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    src = estimate_table(tmp_path)
    result = cli.invoke(
        app, ["run", str(src), *ESTIMATE_ARGS, "--dry-run", "--data-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "nothing was sent" in text
    assert "output tokens ≤ 4,864 (assumed 256 (no max_tokens) per answer)" in text  # 19 x 256
    # batch: 19 x (16 x 1.00 + 256 x 2.00) / 1e6 = 0.010032
    assert "cost at batch prices: $0.0100" in text
    assert emulator.state.request_log == []


# -- the budget ---------------------------------------------------------------------------------
def _start(src: Path, spec: JobSpec, data_dir: Path, output: Path) -> runner.RunHandle:
    ledger = Ledger(default_ledger_url(data_dir))
    try:
        return start.start_run(TableSource(src), spec, data_dir / "runs", ledger, output)
    finally:
        ledger.close()


def test_run_above_max_cost_usd_is_refused_before_any_upload_then_goes_with_a_higher_budget(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = estimate_table(tmp_path)
    base = {"model": "grok-4.3", "prompt": "{{ text }}", "params": {"max_tokens": 50}, "id_column": "id"}
    out = tmp_path / "out.parquet"
    # The estimate is $0.002204 at batch prices (see the estimate test); the budget $0.002.
    with pytest.raises(InputError) as refused:
        _start(src, build_job(None, {**base, "max_cost_usd": 0.002}), data_dir, out)
    message = str(refused.value)
    assert "max_cost_usd" in message
    assert "$0.0022" in message and "19 requests" in message and "$0.0020" in message
    assert "nothing was sent" in message
    assert emulator.state.count("POST", "/v1/files") == 0
    assert emulator.state.count("POST", "/v1/batches") == 0
    assert emulator.state.request_log == []
    assert not out.exists()

    summary = run_to_end(src, build_job(None, {**base, "max_cost_usd": 0.01}), data_dir, out)[0]
    assert summary.by_status["succeeded"] == 19 and summary.by_status["rejected"] == 1
    assert emulator.state.count("POST", "/v1/files", 200) == 1
    assert emulator.state.count("POST", "/v1/batches", 200) == 1


@pytest.mark.usefixtures("prefect_harness")
def test_cli_run_names_the_budget_and_the_estimate(tmp_path: Path, emulator: RunningEmulator) -> None:
    src = estimate_table(tmp_path)
    args = [*ESTIMATE_ARGS, "-p", "max_tokens=50", "--data-dir", str(tmp_path / "d")]
    out = tmp_path / "out.parquet"
    result = cli.invoke(app, ["run", str(src), *args, "--max-cost-usd", "0.002", "-o", str(out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "max_cost_usd" in text and "$0.0022" in text and "$0.0020" in text
    assert emulator.state.request_log == []
    assert not out.exists()
    verdict = cli.invoke(app, ["estimate", str(src), *args, "--max-cost-usd", "0.002"])
    assert "the estimate is ABOVE it" in " ".join(verdict.output.split())
    verdict = cli.invoke(app, ["estimate", str(src), *args, "--max-cost-usd", "0.003"])
    assert "the estimate is within it" in " ".join(verdict.output.split())
    assert emulator.state.request_log == []


# -- preflight: what the batch endpoint takes -------------------------------------------------
def test_model_refused_by_the_batch_endpoint_is_stopped_before_upload_and_suggests_sync(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = reviews(tmp_path, count=10)
    with pytest.raises(JobSpecError, match=r"grok-4.5 is not accepted .*`mode: sync`"):
        run_to_end(src, job(model="grok-4.5"), data_dir, tmp_path / "batch.parquet")[0]
    with pytest.raises(JobSpecError, match=r"`mode: sync`"):
        start.dry_run(TableSource(src), job(model="grok-4.5"), data_dir / "runs")
    assert emulator.state.request_log == []
    assert not (tmp_path / "batch.parquet").exists()


def test_model_refused_by_the_batch_endpoint_runs_in_mode_sync(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "sync.parquet"
    summary = run_to_end(reviews(tmp_path, count=10), job(model="grok-4.5", mode="sync"), data_dir, out)[0]
    assert summary.mode == "sync" and summary.by_status["succeeded"] == 10
    assert emulator.state.count("POST", "/v1/chat/completions", 200) == 10
    assert emulator.state.count("POST", "/v1/files") == 0 and emulator.state.count("POST", "/v1/batches") == 0
    # grok-4.5 standard prices 2.00 / 0.50 / 6.00: (15 * 2.00 + 11 * 0.50 + 9 * 6.00) / 1e6 = 89.5e-6
    assert by_id(out)["r00"]["cost_usd"] == pytest.approx(89.5e-6, rel=1e-12)


def test_mode_auto_sends_a_model_the_batch_endpoint_refuses_synchronously_whatever_the_size(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    out = tmp_path / "auto.parquet"
    spec = job(model="grok-4.5", mode="auto", auto_sync_max_rows=0)  # batch for any size, if accepted
    summary = run_to_end(reviews(tmp_path, count=10), spec, data_dir, out)[0]
    assert summary.mode == "sync" and summary.by_status["succeeded"] == 10
    assert emulator.state.count("POST", "/v1/chat/completions", 200) == 10
    assert emulator.state.count("POST", "/v1/files") == 0 and emulator.state.count("POST", "/v1/batches") == 0
    # and an accepted model with the same settings goes as a batch
    summary = run_to_end(
        reviews(tmp_path, "b.csv", count=10),
        job(mode="auto", auto_sync_max_rows=0),
        data_dir,
        tmp_path / "b.parquet",
    )[0]
    assert summary.mode == "batch" and emulator.state.count("POST", "/v1/batches", 200) == 1


def test_unknown_model_is_a_warning_not_an_error(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(batch_models=[*DEFAULT_BATCH_MODELS, "grok-9-preview"])
    out = tmp_path / "out.parquet"
    with caplog.at_level(logging.WARNING, logger="grok_batch"):
        summary: RunSummary = run_to_end(
            reviews(tmp_path, count=10), job(model="grok-9-preview"), data_dir, out
        )[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'grok-9-preview' is not in the model catalog" in w for w in warnings), warnings
    assert summary.by_status["succeeded"] == 10
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    table = pq.read_table(out)
    # no prices: no estimate, rather than a wrong one; the cost is what the service billed
    assert table.column("estimated_cost_usd").null_count == 10
    assert table.column("service_cost_usd").null_count == 0
    assert table.column("cost_usd").to_pylist() == table.column("service_cost_usd").to_pylist()
    assert summary.estimated_cost_usd is None and summary.priced is False
    cost_line, estimate_line = report_lines(out)
    assert cost_line == f"- cost: ${summary.cost_usd:.6f} (billed by the service)" and summary.cost_usd > 0
    assert estimate_line is not None and "unknown" in estimate_line and "grok-9-preview" in estimate_line
    assert not flagged(estimate_line)


def test_an_openai_compatible_gateway_serving_grok_gets_no_catalog_warning_and_the_estimate_as_cost(
    tmp_path: Path, openai_emulator: RunningEmulator, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # grok-4.3 is listed for provider xai; served here through the OpenAI protocol by a host
    # that is not OpenAI's (the emulator at OPENAI_BASE_URL), so the catalog has nothing to say.
    out = tmp_path / "gateway.parquet"
    with caplog.at_level(logging.WARNING):
        summary = run_to_end(reviews(tmp_path), job(provider="openai"), data_dir, out)[0]
    assert summary.by_status["succeeded"] == 12
    assert openai_emulator.state.count("POST", "/openai/v1/batches", 200) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    rows = by_id(out)
    # OpenAI's protocol reports no cost: the cost is the catalog's estimate
    assert rows["r00"]["estimated_cost_usd"] == pytest.approx(34.76e-6, rel=1e-12)
    for key, r in rows.items():
        assert r["service_cost_usd"] is None and r["cost_usd"] == r["estimated_cost_usd"], key
    assert summary.service_cost_usd is None
    text = runner.report_path(out).read_text(encoding="utf-8")
    cost_line, estimate_line = report_lines(out)
    assert cost_line == (
        "- cost: $0.000401 (estimated: catalog batch prices x tokens used; the service reports no cost)"
    )
    assert estimate_line is None and cost_warnings(text) == []


def test_budget_cannot_be_checked_for_a_model_without_prices(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    with pytest.raises(GrokBatchError, match=r"max_cost_usd.*grok-9-preview has no prices"):
        _start(
            reviews(tmp_path), job(model="grok-9-preview", max_cost_usd=1.0), data_dir, tmp_path / "o.parquet"
        )
    assert emulator.state.request_log == []


def test_budget_still_applies_to_a_rerun_of_a_run_that_never_sent_anything(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    # First attempt: within budget, planned, then stopped before any upload (a Ctrl-C, a
    # failed upload). The rerun asks for a smaller budget: max_cost_usd is not part of the
    # run key, so it finds the same run, and must still check the budget.
    src = estimate_table(tmp_path)
    base = {"model": "grok-4.3", "prompt": "{{ text }}", "params": {"max_tokens": 50}, "id_column": "id"}
    out = tmp_path / "out.parquet"
    first = _start(src, build_job(None, {**base, "max_cost_usd": 0.01}), data_dir, out)
    assert [row.step for row in Ledger(default_ledger_url(data_dir)).batches(first.run_key)] == ["planned"]
    with pytest.raises(InputError, match=r"max_cost_usd.*\$0\.0022"):
        _start(src, build_job(None, {**base, "max_cost_usd": 0.002}), data_dir, out)
    assert emulator.state.request_log == []
