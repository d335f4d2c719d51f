"""The row cache: a request answered before (same provider, model, system, parameters and
rendered prompt) is not sent again. Proven against the emulator by what it was actually given:
the requests it parsed from each uploaded batch file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emulator import RunningEmulator
from flows.cli import app
from tasks import runner
from tasks.spec.job import JobSpec, build_job
from tests.helpers import run_to_end, write_csv

cli = CliRunner()
SYSTEM = "You are a terse review classifier."
WORDS = ["great", "broken", "fine", "refund", "love", "slow", "ok"]


def job(**fields: Any) -> JobSpec:
    base = {"model": "grok-4.3", "system": SYSTEM, "prompt": "Classify: {{ text }}", "id_column": "id"}
    return build_job(None, {**base, **fields})


def rows(start: int, stop: int) -> list[dict[str, str]]:
    return [
        {"id": f"r{i:02d}", "text": f"review {i}: it was {WORDS[i % len(WORDS)]}"} for i in range(start, stop)
    ]


def sent_batches(emulator: RunningEmulator) -> list[dict[str, dict[str, Any]]]:
    """custom_id -> request body of every batch the emulator was given, in creation order:
    what it parsed from the uploaded request file."""
    with emulator.state.lock:
        records = [emulator.state.batches[i] for i in emulator.state.batch_order]
    return [dict(zip(r.custom_ids, r.bodies, strict=True)) for r in records]


def user_texts(batch: dict[str, dict[str, Any]]) -> set[str]:
    return {body["messages"][-1]["content"] for body in batch.values()}


def by_id(output: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in pq.read_table(output).to_pylist()}


def report(output: Path) -> str:
    return runner.report_path(output).read_text(encoding="utf-8")


def test_appended_rows_are_the_only_requests_sent_again(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    first_src = write_csv(tmp_path / "reviews.csv", rows(0, 12))
    first_out = tmp_path / "first.parquet"
    first = run_to_end(first_src, job(), data_dir, first_out)[0]
    assert first.by_status["succeeded"] == 12 and first.from_cache == 0

    grown = write_csv(tmp_path / "reviews-grown.csv", rows(0, 17))  # 5 rows appended to a copy
    second_out = tmp_path / "second.parquet"
    second = run_to_end(grown, job(), data_dir, second_out)[0]

    batches = sent_batches(emulator)
    assert [len(b) for b in batches] == [12, 5]
    assert user_texts(batches[1]) == {f"Classify: {r['text']}" for r in rows(12, 17)}
    before, after = by_id(first_out), by_id(second_out)
    assert len(after) == 17
    assert set(batches[1]) == {after[f"r{i:02d}"]["custom_id"] for i in range(12, 17)}
    for i in range(12):
        row, old = after[f"r{i:02d}"], before[f"r{i:02d}"]
        assert row["from_cache"] is True and row["attempts"] == 0 and row["status"] == "succeeded"
        assert row["response"] == old["response"]
        assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
            old["prompt_tokens"],
            old["completion_tokens"],
            old["cached_tokens"],
        )
        assert row["cost_usd"] == 0.0 and row["estimated_cost_usd"] == 0.0  # not paid for again
    for i in range(12, 17):
        row = after[f"r{i:02d}"]
        assert row["from_cache"] is False and row["attempts"] == 1 and row["cost_usd"] > 0
    # What the cached rows would have cost at grok-4.3 batch prices (1.00 / 0.16 / 2.00 per 1M).
    saved = sum(
        (
            (r["prompt_tokens"] - r["cached_tokens"]) * 1.00
            + r["cached_tokens"] * 0.16
            + (r["completion_tokens"] + r["reasoning_tokens"]) * 2.00
        )
        / 1e6
        for r in before.values()
    )
    assert saved > 0
    assert saved == pytest.approx(sum(r["estimated_cost_usd"] for r in before.values()), rel=1e-12)
    assert second.from_cache == 12
    assert abs(second.saved_usd - saved) < 1e-12
    text = report(second_out)
    assert f"- from the row cache: 12 row(s), not sent; saved ${saved:.6f}" in text
    # the run's cost is the service's bill for what was sent this time, and nothing else
    billed = re.search(r"^- cost: \$([0-9.]+) \(billed by the service\)$", text, re.MULTILINE)
    assert billed is not None, text
    fresh = sum(after[f"r{i:02d}"]["service_cost_usd"] for i in range(12, 17))
    assert fresh > 0 and float(billed.group(1)) == round(fresh, 6)
    assert second.cost_usd == pytest.approx(fresh, rel=1e-12)


def test_cache_off_sends_every_row_again(tmp_path: Path, emulator: RunningEmulator, data_dir: Path) -> None:
    run_to_end(write_csv(tmp_path / "reviews.csv", rows(0, 12)), job(), data_dir, tmp_path / "first.parquet")[
        0
    ]
    grown = write_csv(tmp_path / "reviews-grown.csv", rows(0, 17))

    # The estimate says what the cache would save, and --no-cache turns it off.
    args = ["run", str(grown), "--model", "grok-4.3", "--system", SYSTEM, "--prompt", "Classify: {{ text }}"]
    args += ["--id-column", "id", "--dry-run", "--data-dir", str(data_dir)]
    cached = cli.invoke(app, args)
    assert cached.exit_code == 0, cached.output
    assert "rows 17: 5 to send, 12 from the row cache, 0 rejected" in " ".join(cached.output.split())
    uncached = cli.invoke(app, [*args, "--no-cache"])
    assert uncached.exit_code == 0, uncached.output
    assert "rows 17: 17 to send, 0 from the row cache, 0 rejected" in " ".join(uncached.output.split())
    assert len(sent_batches(emulator)) == 1  # dry runs send nothing

    out = tmp_path / "second.parquet"
    summary = run_to_end(grown, job(cache=False), data_dir, out)[0]
    batches = sent_batches(emulator)
    assert [len(b) for b in batches] == [12, 17]
    assert user_texts(batches[1]) == {f"Classify: {r['text']}" for r in rows(0, 17)}
    after = by_id(out)
    assert all(r["from_cache"] is False and r["attempts"] == 1 for r in after.values())
    assert summary.from_cache == 0 and "row cache" not in report(out)


def test_changed_template_sends_everything_again_but_name_or_output_reuse_every_answer(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = write_csv(tmp_path / "reviews.csv", rows(0, 12))
    first_out = tmp_path / "first.parquet"
    run_to_end(src, job(), data_dir, first_out)[0]
    first = by_id(first_out)

    # Another template: other requests, all sent.
    rated_out = tmp_path / "rated.parquet"
    run_to_end(src, job(prompt="Rate this review: {{ text }}"), data_dir, rated_out)[0]
    batches = sent_batches(emulator)
    assert [len(b) for b in batches] == [12, 12]
    assert user_texts(batches[1]) == {f"Rate this review: {r['text']}" for r in rows(0, 12)}
    assert not user_texts(batches[0]) & user_texts(batches[1])
    rated = by_id(rated_out)
    assert all(r["from_cache"] is False and r["attempts"] == 1 for r in rated.values())
    assert {rated[k]["response"] for k in rated}.isdisjoint({first[k]["response"] for k in first})

    # Only the name and the output differ, on a reordered copy (a new run): nothing is sent.
    shuffled = write_csv(tmp_path / "reviews-reordered.csv", list(reversed(rows(0, 12))))
    renamed_out = tmp_path / "renamed.parquet"
    renamed = run_to_end(shuffled, job(name="renamed-job", output=str(renamed_out)), data_dir, renamed_out)[0]
    assert len(sent_batches(emulator)) == 2
    assert renamed.from_cache == 12 and renamed.rounds == 0
    again = by_id(renamed_out)
    for key, row in again.items():
        assert row["from_cache"] is True and row["attempts"] == 0
        assert row["response"] == first[key]["response"]

    # Only the output differs, same file: the finished run's answers are written again.
    elsewhere = tmp_path / "elsewhere.parquet"
    run_to_end(src, job(output=str(elsewhere)), data_dir, elsewhere)[0]
    assert len(sent_batches(emulator)) == 2
    assert emulator.state.count("POST", "/v1/files", 200) == 2
    assert {k: r["response"] for k, r in by_id(elsewhere).items()} == {
        k: r["response"] for k, r in first.items()
    }


def test_failed_and_invalid_rows_are_not_cached(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    structured = {"columns": {"sentiment": ["positive", "negative", "neutral"]}, "max_attempts": 1}
    emulator.configure(fail_rate=0.3, invalid_output_rate=0.3)
    first_out = tmp_path / "first.parquet"
    run_to_end(write_csv(tmp_path / "reviews.csv", rows(0, 20)), job(**structured), data_dir, first_out)[0]
    first = by_id(first_out)
    statuses = [r["status"] for r in first.values()]
    failed = {k for k, r in first.items() if r["status"] == "failed"}
    invalid = {k for k, r in first.items() if r["status"] == "invalid_output"}
    assert failed and invalid and statuses.count("succeeded") == 20 - len(failed) - len(invalid) > 0

    emulator.configure(fail_rate=0.0, invalid_output_rate=0.0)
    second_out = tmp_path / "second.parquet"
    second = run_to_end(
        write_csv(tmp_path / "grown.csv", rows(0, 21)), job(**structured), data_dir, second_out
    )[0]
    after = by_id(second_out)
    batches = sent_batches(emulator)
    assert len(batches) == 2
    resent = {key for key, row in after.items() if row["custom_id"] in batches[1]}
    assert resent == failed | invalid | {"r20"}
    assert len(batches[1]) == len(failed) + len(invalid) + 1
    for key, row in after.items():
        assert row["status"] == "succeeded", key
        assert row["from_cache"] is (key not in resent), key
        assert row["attempts"] == (1 if key in resent else 0), key
    assert second.from_cache == 20 - len(failed) - len(invalid)


def test_all_rows_cached_completes_without_any_batch(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    first_out = tmp_path / "first.parquet"
    run_to_end(write_csv(tmp_path / "reviews.csv", rows(0, 12)), job(), data_dir, first_out)[0]
    assert emulator.state.count("POST", "/v1/files", 200) == 1
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    log_before = len(emulator.state.request_log)

    reordered = write_csv(tmp_path / "reordered.csv", list(reversed(rows(0, 12))))
    out = tmp_path / "second.parquet"
    summary = run_to_end(reordered, job(), data_dir, out)[0]
    assert emulator.state.request_log[log_before:] == []  # not one call to the service
    assert summary.rounds == 0 and summary.batches == []
    assert summary.by_status["succeeded"] == 12 and summary.from_cache == 12
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"r{i:02d}" for i in reversed(range(12))]
    assert table.column("from_cache").to_pylist() == [True] * 12
    assert table.column("attempts").to_pylist() == [0] * 12
    assert table.column("cost_usd").to_pylist() == [0.0] * 12
    first = by_id(first_out)
    assert all(row["response"] == first[row["id"]]["response"] for row in table.to_pylist())
    text = report(out)
    assert "- from the row cache: 12 row(s), not sent" in text
    assert "- cost: $0.000000" in text


def test_answers_from_another_server_are_never_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator's answers must never stand in for the real service's: the server that
    # answers (job base_url, else the provider's variable, else the public URL) is part of
    # the cache namespace.
    from tasks.money.row_cache import namespace

    spec = job()
    monkeypatch.delenv("XAI_BASE_URL", raising=False)
    public = namespace(spec)
    monkeypatch.setenv("XAI_BASE_URL", "http://127.0.0.1:8000/v1")
    from_env = namespace(spec)
    assert (
        len({public, from_env, namespace(spec.model_copy(update={"base_url": "http://127.0.0.1:9/v1"}))}) == 3
    )
    assert namespace(spec.model_copy(update={"base_url": "http://127.0.0.1:8000/v1"})) == from_env
    assert namespace(spec.model_copy(update={"provider": "openai"})) != from_env
