"""What the service or the network does wrong never loses a paid answer, never pays for one
twice, and never leaves a run stuck: against the emulator over HTTP with the real openai SDK.

- Answers holding U+2028 / U+0085 / U+2029 (legal, unescaped inside JSON strings) are
  collected from an OpenAI output file: lines are split on LF only.
- Sync mode, connections dropped after the service handled (and billed) the request: such a
  request is not resent in the same round; its row goes to the next round, so the paid
  completions are exactly the answers plus the rows deliberately sent again.
- A batch the service no longer knows (404) ends `gone`: its rows go to the next round, and
  `grok-batch cancel` works on such a run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emulator import RunningEmulator
from tasks import runner, start
from tasks.infra.errors import ProviderError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.ratelimit import RateLimiter
from tasks.infra.table_io import TableSource
from tasks.lifecycle import BatchState
from tasks.providers.registry import make_provider
from tasks.providers.sdk import never_sent
from tasks.providers.xai import XaiProvider
from tasks.spec.job import build_job
from tasks.stages.answer_sync import SyncLimits, answer_shard, read_journal
from tests.helpers import (
    EMULATOR_KEY,
    advance_until_complete,
    assert_answers_on_their_rows,
    free_port,
    review_rows,
    run_to_end,
    write_csv,
)

CHAT = "/v1/chat/completions"
# Unicode line breaks that JSON leaves unescaped inside strings; str.splitlines splits on each.
LINE_BREAKS = ["calm\u2028steady", "torn\u0085apart", "para\u2029graph"]


def rows_of(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out).to_pylist()


# -- 1. lines split only where JSON ends ------------------------------------------------------
def test_openai_output_file_answers_holding_unicode_line_breaks_are_collected(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    # The emulator answers a structured request with one of the schema's enum values, so every
    # answer (and so every line of the output file) holds one of these characters, unescaped.
    src = write_csv(tmp_path / "in.csv", review_rows(24))
    job = build_job(
        None,
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "prompt": "Classify: {{ text }}",
            "id_column": "id",
            "columns": {"mood": LINE_BREAKS},
            "keep_service_files": True,
        },
    )
    out = tmp_path / "out.parquet"
    _, handle = run_to_end(src, job, tmp_path / "data", out, timeout_s=30)

    output_ids = [b.output_file_id for b in openai_emulator.state.openai.batches.values()]
    raw = b"".join(openai_emulator.state.files[i].content for i in output_ids if i)
    assert all(c.encode() in raw for c in ("\u2028", "\u0085")), "the output file holds no raw line break"
    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["succeeded"] * 24, {r["status"]: r["error"] for r in rows}
    assert {r["mood"] for r in rows} <= set(LINE_BREAKS) and len({r["mood"] for r in rows}) > 1
    assert all(json.loads(r["response"])["mood"] == r["mood"] for r in rows)
    assert_answers_on_their_rows(out, handle.run_dir)
    assert openai_emulator.state.count("POST", "/openai/v1/batches", 200) == 1  # paid once


# -- 2. sync: a request that may have reached the service is not resent in the same round ----
def test_sync_dropped_replies_are_resent_only_in_a_later_round_never_paid_twice_in_one(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    rows_in = 299
    emulator.configure(drop_after_handled_rate=0.3, seed=3)
    src = write_csv(tmp_path / "in.csv", review_rows(rows_in))
    job = build_job(
        None,
        {
            "model": "grok-4.3",
            "prompt": "Classify: {{ text }}",
            "id_column": "id",
            "mode": "sync",
            "sync_requests_per_minute": 60_000,
            "sync_concurrency": 4,
            "max_attempts": 10,
        },
    )
    out = tmp_path / "out.parquet"
    summary, handle = run_to_end(src, job, tmp_path / "data", out, timeout_s=240)
    rows = rows_of(out)
    state = emulator.state
    paid = state.count("POST", CHAT, 200)  # every request the service handled: billed
    lost = state.count("POST", CHAT, 200, replied=False)  # handled, reply dropped
    assert state.count("POST", CHAT) == paid  # no other status: every request was handled
    by_status = Counter(r["status"] for r in rows)
    answered = by_status["succeeded"]
    resent = sum(r["attempts"] - 1 for r in rows)  # rows sent again in a later round
    ended_unanswered = [r for r in rows if r["status"] != "succeeded"]
    assert lost > 30, "the fault knob did not bite: the test proves nothing"
    # Every paid completion is an answer delivered, a row deliberately sent again in a later
    # round, or (after max_attempts) a row whose last reply was lost and says so.
    assert paid == answered + resent + len(ended_unanswered), (paid, answered, resent, by_status)
    assert paid == sum(r["attempts"] for r in rows)  # at most one paid request per row per round
    assert lost == resent + len(ended_unanswered)
    assert all("not sent again in this round" in r["error"] for r in ended_unanswered)
    # Every row has its outcome; at 0.3**10 a row, all but (rarely) one got its answer through.
    assert answered + len(ended_unanswered) == rows_in and answered >= rows_in - 1
    assert summary.rounds > 1
    assert_answers_on_their_rows(out, handle.run_dir)


def test_sync_a_request_that_never_left_is_retried_in_the_same_round(tmp_path: Path) -> None:
    """Nothing listens on the port: every try is a connect error, safe to send again at once;
    the row fails only after `max_tries`, with the reason."""
    provider = XaiProvider(f"http://127.0.0.1:{free_port()}/v1", api_key="unused")
    shard = tmp_path / "shard.jsonl"
    body = {"model": "grok-4.3", "messages": [{"role": "user", "content": "hi"}]}
    request = {"custom_id": "c1", "method": "POST", "url": CHAT, "body": body}
    shard.write_text(json.dumps(request) + "\n", encoding="utf-8")
    journal = tmp_path / "journal.jsonl"
    limits = SyncLimits(concurrency=1, max_tries=3, max_retry_wait_s=0.01, timeout_s=5)
    done = answer_shard(
        provider, shard, journal, limits, RateLimiter(60_000, 10**9), heartbeat=lambda _: True
    )
    record = read_journal(journal)["c1"]
    assert done and record["status"] == "failed" and record["retryable"]
    assert record["error"].startswith("no answer after 3 tries: cannot connect: ConnectError")


def test_never_sent_tells_a_connect_error_from_a_reply_lost(emulator: RunningEmulator) -> None:
    refused = openai.OpenAI(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError) as connect:
        refused.models.list()
    assert never_sent(connect.value)
    emulator.configure(drop_after_handled_rate=1.0)
    client = openai.OpenAI(base_url=emulator.url, api_key=EMULATOR_KEY, max_retries=0)
    body = {"model": "grok-4.3", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(openai.APIConnectionError) as dropped:
        client.post("/chat/completions", cast_to=bytes, body=body)
    assert not never_sent(dropped.value)
    assert emulator.state.count("POST", CHAT, 200, replied=False) == 1  # handled: billed, reply lost


# -- 3. a batch the service no longer knows -------------------------------------------------------
BATCH_JOBS = {
    "xai": {"provider": "xai", "model": "grok-4.3"},
    "openai": {"provider": "openai", "model": "gpt-4o-mini"},
}


def submit_then_forget(
    tmp_path: Path, server: RunningEmulator, provider_name: str, rows: int
) -> tuple[Ledger, runner.RunHandle, str]:
    """A run whose one batch was created and then forgotten by the service (through the
    emulator's admin route, as a test or a person would), before it could finish."""
    server.configure(processing_s=600.0)  # cannot finish before it is forgotten
    src = write_csv(tmp_path / "in.csv", review_rows(rows))
    fields = {**BATCH_JOBS[provider_name], "prompt": "Classify: {{ text }}", "id_column": "id"}
    job = build_job(None, fields)
    data_dir = tmp_path / "data"
    ledger = Ledger(default_ledger_url(data_dir))
    handle = start.start_run(TableSource(src), job, data_dir / "runs", ledger, tmp_path / "out.parquet")
    runner.advance(ledger, make_provider(job.provider, job.base_url), handle)  # submit, first poll
    (batch,) = ledger.batches(handle.run_key)
    assert batch.batch_id is not None and batch.state in (BatchState.VALIDATING, BatchState.RUNNING)
    admin = f"http://{server.host}:{server.port}/_emulator/forget"
    assert httpx.post(admin, json={"batch_id": batch.batch_id}).status_code == 200
    assert httpx.post(admin, json={"batch_id": batch.batch_id}).status_code == 404  # already gone
    server.configure(processing_s=0.2)
    return ledger, handle, batch.batch_id


@pytest.mark.parametrize("provider_name", ["xai", "openai"])
def test_a_batch_the_service_forgot_ends_gone_and_its_rows_go_to_the_next_round(
    tmp_path: Path, openai_emulator: RunningEmulator, provider_name: str
) -> None:
    ledger, handle, batch_id = submit_then_forget(tmp_path, openai_emulator, provider_name, 12)
    provider = make_provider(handle.job.provider, handle.job.base_url)
    try:
        advance_until_complete(ledger, provider, handle, timeout_s=30)
        summary = runner.finish(ledger, handle, tmp_path / "out.parquet", overwrite=False)
        first, second = ledger.batches(handle.run_key)
    finally:
        ledger.close()
    assert (first.batch_id, first.state, first.round_no) == (batch_id, BatchState.GONE, 1)
    assert first.message is not None and "no longer knows this batch (HTTP 404)" in first.message
    assert (second.state, second.round_no) == (BatchState.DONE, 2)
    rows = rows_of(tmp_path / "out.parquet")
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 2)] * 12
    assert summary.rounds == 2
    assert_answers_on_their_rows(tmp_path / "out.parquet", handle.run_dir)
    report = handle.paths.report.read_text(encoding="utf-8")
    assert "| gone |" in report and "no longer knows this batch" in report


@pytest.mark.parametrize("provider_name", ["xai", "openai"])
def test_grok_batch_cancel_works_on_a_run_whose_batch_the_service_forgot(
    tmp_path: Path, openai_emulator: RunningEmulator, provider_name: str
) -> None:
    from flows.cli import app

    ledger, handle, batch_id = submit_then_forget(tmp_path, openai_emulator, provider_name, 6)
    cancelled = CliRunner().invoke(app, ["cancel", handle.run_key, "--data-dir", str(tmp_path / "data")])
    assert cancelled.exit_code == 0, cancelled.output
    assert "nothing more will be sent" in cancelled.output
    provider = make_provider(handle.job.provider, handle.job.base_url)
    try:
        advance_until_complete(ledger, provider, handle, timeout_s=30)
        runner.finish(ledger, handle, tmp_path / "out.parquet", overwrite=False)
        (batch,) = ledger.batches(handle.run_key)  # cancelled: no follow-up round
    finally:
        ledger.close()
    assert (batch.batch_id, batch.state) == (batch_id, BatchState.GONE)
    rows = rows_of(tmp_path / "out.parquet")
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 1)] * 6
    assert all(r["error"].startswith("the service no longer knows this batch") for r in rows), rows[0]


@pytest.mark.parametrize("provider_name", ["xai", "openai"])
def test_a_server_that_404s_every_route_gives_up_no_batch(
    openai_emulator: RunningEmulator, provider_name: str
) -> None:
    """A wrong base URL (or a proxy) answers 404 to the batch and to the listing alike: that is
    an error to fix, and the batch is not given up (its rows are not paid for again)."""
    base = f"http://{openai_emulator.host}:{openai_emulator.port}/nowhere/v1"
    provider = make_provider(provider_name, base)
    with pytest.raises(ProviderError, match="unknown \\(HTTP 404\\); listing batches failed: HTTP 404"):
        provider.get_status("batch_123")
