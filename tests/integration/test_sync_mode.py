"""mode sync / auto: rows through /v1/chat/completions, journaled and paced, against the
emulator over HTTP with the real openai SDK. The emulator's request log (paths, statuses,
timestamps) proves what was paid for and how fast it was sent."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emulator import RunningEmulator
from emulator.completions import chat_completion
from tasks import runner
from tasks.infra import crashpoints
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.run_layout import RunPaths, RunPlan
from tasks.spec.job import JobSpec, build_job
from tasks.stages.answer_sync import read_journal
from tasks.stages.report import RunSummary
from tests.helpers import (
    EMULATOR_KEY,
    assert_answers_on_their_rows,
    request_bodies,
    review_rows,
    run_cli,
    run_to_end,
    write_csv,
)

CHAT = "/v1/chat/completions"
OPENAI_CHAT = "/openai/v1/chat/completions"
REASONING_MODEL = "grok-4.20-0309-reasoning"
FAST = {"sync_requests_per_minute": 60_000, "sync_concurrency": 4}  # pacing out of the way
JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}", "id_column": "id", "mode": "sync", **FAST}


def run_pipeline(
    src: Path,
    job: JobSpec,
    data_dir: Path,
    out: Path,
    on_start: Callable[[Ledger, runner.RunHandle], None] | None = None,
    timeout_s: float = 30.0,
) -> tuple[RunSummary, runner.RunHandle]:
    return run_to_end(src, job, data_dir, out, timeout_s=timeout_s, on_start=on_start)


def rows_of(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out).to_pylist()


def paths_used(server: RunningEmulator) -> set[str]:
    return {e.path for e in server.state.request_log}


def assert_paced(times: list[float], rpm: int, slack_s: float = 0.02) -> None:
    """No window of the request log holds more requests than `rpm` allows: for requests i..j,
    j - i + 1 <= (t_j - t_i) * rpm / 60 + 1. The slack covers the jitter between a worker's
    start and the server's timestamp (up to ~7 ms measured on an idle 2-core machine); an
    unpaced or per-thread limiter misses by a whole interval."""
    interval = 60.0 / rpm
    times = sorted(times)
    for i, start in enumerate(times):
        for j in range(i + 1, len(times)):
            count, window = j - i + 1, times[j] - start
            assert count <= (window + slack_s) / interval + 1, (
                f"{count} requests within {window:.3f} s; {rpm}/min allows {window / interval + 1:.2f}"
            )


def test_sync_run_answers_every_row_through_chat_completions_only(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    rows = review_rows(30)
    rows[7]["text"] = ""  # rejected before sending: renders to an empty prompt
    src = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "prompt": "{{ text }}", "shard_max_lines": 10})
    summary, handle = run_pipeline(src, job, tmp_path / "data", out)
    assert handle.plan.mode == "sync"
    table = rows_of(out)
    assert [r["id"] for r in table] == [f"r{i}" for i in range(30)]
    statuses = [r["status"] for r in table]
    assert statuses[7] == "rejected" and statuses.count("succeeded") == 29
    assert {r["attempts"] for r in table if r["status"] == "succeeded"} == {1} and summary.rounds == 1
    assert_answers_on_their_rows(out, handle.run_dir)
    assert emulator.state.count("POST", CHAT, 200) == 29
    assert paths_used(emulator) == {CHAT}  # no /v1/files, no /v1/batches
    assert all(e.status == 200 for e in emulator.state.request_log)


def test_429_storm_is_paced_and_every_row_still_succeeds(tmp_path: Path, emulator: RunningEmulator) -> None:
    rpm = 600  # at least 0.1 s between request starts, whatever the concurrency
    emulator.configure(rate_429=0.4, retry_after_s=0.05, seed=11)
    src = write_csv(tmp_path / "in.csv", review_rows(24))
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "sync_concurrency": 4, "sync_requests_per_minute": rpm})
    _, handle = run_pipeline(src, job, tmp_path / "data", out)
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 24
    assert_answers_on_their_rows(out, handle.run_dir)
    assert emulator.state.count("POST", CHAT, 200) == 24  # each row paid once
    assert emulator.state.count("POST", CHAT, 429) >= 5  # the storm happened
    assert_paced(emulator.state.times("POST", CHAT), rpm)  # 429s count against the limit too


def test_retry_after_of_a_429_pauses_every_worker(tmp_path: Path, emulator: RunningEmulator) -> None:
    """After a 429 saying Retry-After R, nobody sends for R seconds: not the worker that heard
    it, and not the workers that had already booked their next start."""
    retry_after = 0.4
    emulator.configure(rate_429=0.25, retry_after_s=retry_after, seed=4)
    src = write_csv(tmp_path / "in.csv", review_rows(16))
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "sync_concurrency": 4, "sync_requests_per_minute": 1200})  # 0.05 s apart
    run_pipeline(src, job, tmp_path / "data", out)
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 16
    log = [e for e in emulator.state.request_log if e.path == CHAT]
    limited = [e.time for e in log if e.status == 429]
    assert limited, "no 429 was answered: the test proves nothing"
    in_flight_s = 0.03  # a request already on the wire when the 429 came back cannot be recalled
    ignored = [
        (round(e.time - t, 3), e.status)
        for t in limited
        for e in log
        if t + in_flight_s < e.time < t + retry_after - in_flight_s
    ]
    assert not ignored, (
        f"{len(ignored)} request(s) sent within Retry-After={retry_after} s of a 429 "
        f"(seconds after the 429, status): {ignored[:6]}"
    )


def cli(
    args: list[str], server: RunningEmulator, api_url: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(args, api_url, XAI_BASE_URL=server.url, XAI_API_KEY=EMULATOR_KEY, **env)


@pytest.mark.slow
def test_sigkill_after_an_answer_then_rerun_pays_for_no_row_twice(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    rows = 20
    src = write_csv(tmp_path / "in.csv", review_rows(rows))
    out, data_dir = tmp_path / "out.parquet", tmp_path / "data"
    job_file = tmp_path / "job.yaml"
    # One worker, 0.1 s apart: the kill after the first journaled answer comes well before
    # the second request starts, so nothing is in flight unjournaled.
    job_file.write_text("sync_concurrency: 1\nsync_requests_per_minute: 600\n")
    args = [
        "run", str(src), "--mode", "sync", "--model", "grok-4.3", "--prompt", "Classify: {{ text }}",
        "--id-column", "id", "--job", str(job_file), "-o", str(out), "--data-dir", str(data_dir),
    ]  # fmt: skip
    # In-process stages (no Prefect server): the crash point is in the stage both ways share.
    crashed = cli(args, emulator, "", GROK_BATCH_CRASH_AT=crashpoints.AFTER_SYNC_ANSWER)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert not out.exists()
    run_dir = next((data_dir / "runs").iterdir())
    journals = list((run_dir / "answers").glob("*.jsonl"))
    assert len(journals) == 1 and len(read_journal(journals[0])) == 1  # died right after one answer
    assert emulator.state.count("POST", CHAT, 200) == 1

    rerun = cli(args, emulator, "")
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(rows)]
    assert table.column("status").to_pylist() == ["succeeded"] * rows
    assert emulator.state.count("POST", CHAT, 200) == rows  # the journaled answer was not bought again
    assert paths_used(emulator) == {CHAT}
    assert_answers_on_their_rows(out, run_dir)


def test_auto_mode_picks_sync_up_to_the_limit_and_batch_above(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    job = build_job(None, {**JOB, "prompt": "{{ text }}", "mode": "auto", "auto_sync_max_rows": 10})
    small_rows = review_rows(11)
    small_rows[3]["text"] = ""  # rejected: 10 rows to send, exactly the limit
    small = write_csv(tmp_path / "small.csv", small_rows)
    summary, handle = run_pipeline(small, job, tmp_path / "data-small", tmp_path / "small.parquet")
    assert handle.plan.mode == "sync"
    assert RunPlan.load(RunPaths(handle.run_dir)).mode == "sync"  # recorded in run.json
    assert summary.by_status["succeeded"] == 10 and summary.by_status["rejected"] == 1
    assert emulator.state.count("POST", CHAT, 200) == 10
    assert paths_used(emulator) == {CHAT}

    large = write_csv(tmp_path / "large.csv", review_rows(11))  # 11 rows to send: one above
    summary, handle = run_pipeline(large, job, tmp_path / "data-large", tmp_path / "large.parquet")
    assert handle.plan.mode == "batch"
    assert RunPlan.load(RunPaths(handle.run_dir)).mode == "batch"
    assert summary.by_status["succeeded"] == 11
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert emulator.state.count("POST", CHAT, 200) == 10  # unchanged: the large table went as a batch
    assert_answers_on_their_rows(tmp_path / "large.parquet", handle.run_dir)


def test_one_job_file_runs_as_xai_batch_openai_batch_and_sync_with_one_output_schema(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"model: {REASONING_MODEL}\nprompt: 'Classify: {{{{ text }}}}'\nid_column: id\nshard_max_lines: 10\n"
        "sync_requests_per_minute: 60000\nsync_concurrency: 4\n"
    )
    original = job_file.read_bytes()
    src = write_csv(tmp_path / "in.csv", review_rows(20))
    variants = [("xai", "batch"), ("openai", "batch"), ("xai", "sync"), ("openai", "sync")]
    outputs = {}
    for provider, mode in variants:
        label = f"{provider}-{mode}"
        job = build_job(job_file, {"provider": provider, "mode": mode})
        out = tmp_path / f"{label}.parquet"
        _, handle = run_pipeline(src, job, tmp_path / f"data-{label}", out)
        assert handle.plan.mode == mode
        assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 20, label
        assert_answers_on_their_rows(out, handle.run_dir)
        outputs[label] = pq.read_table(out)
    assert job_file.read_bytes() == original
    state = openai_emulator.state
    assert (
        state.count("POST", "/v1/batches", 200) == 2 and state.count("POST", "/openai/v1/batches", 200) == 2
    )
    assert state.count("POST", CHAT, 200) == 20 and state.count("POST", OPENAI_CHAT, 200) == 20

    reference = outputs["xai-batch"].schema
    for label, table in outputs.items():
        assert table.schema.equals(reference), f"{label}:\n{table.schema}\n!=\n{reference}"
    same = ["id", "text", "status", "response", "prompt_tokens", "completion_tokens", "reasoning_tokens"]
    expected = outputs["xai-batch"].select(same).to_pylist()
    for label, table in outputs.items():
        assert table.select(same).to_pylist() == expected, label


def test_sync_with_provider_openai_normalizes_tokens_like_xai(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    src = write_csv(tmp_path / "in.csv", review_rows(20))
    job = build_job(None, {**JOB, "model": REASONING_MODEL, "provider": "openai"})
    out = tmp_path / "openai.parquet"
    _, handle = run_pipeline(src, job, tmp_path / "data", out)
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 20
    assert_answers_on_their_rows(out, handle.run_dir)
    assert openai_emulator.state.count("POST", OPENAI_CHAT, 200) == 20
    assert paths_used(openai_emulator) == {OPENAI_CHAT}
    bodies = request_bodies(handle.run_dir)
    for row in rows_of(out):
        openai_usage = chat_completion(bodies[row["custom_id"]], 0, "openai")["usage"]
        xai_usage = chat_completion(bodies[row["custom_id"]], 0, "xai")["usage"]
        assert row["reasoning_tokens"] == openai_usage["completion_tokens_details"]["reasoning_tokens"] > 0
        # OpenAI counts reasoning inside completion_tokens; the column never does
        assert row["completion_tokens"] + row["reasoning_tokens"] == openai_usage["completion_tokens"]
        assert row["completion_tokens"] == xai_usage["completion_tokens"]
        assert row["prompt_tokens"] == xai_usage["prompt_tokens"]


@pytest.mark.usefixtures("prefect_harness")
def test_wrong_key_stops_a_sync_run_with_a_clear_error_and_pays_nothing(
    tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import app

    wrong_key = "xai-WRONG-7d1c0b9a8e"
    monkeypatch.setenv("XAI_API_KEY", wrong_key)
    src = write_csv(tmp_path / "in.csv", review_rows(12))
    job_file = tmp_path / "job.yaml"
    job_file.write_text("sync_concurrency: 2\nsync_requests_per_minute: 60000\n")
    out = tmp_path / "out.parquet"
    args = [
        "run", str(src), "--mode", "sync", "--model", "grok-4.3", "--prompt", "Classify: {{ text }}",
        "--id-column", "id", "--job", str(job_file), "-o", str(out), "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "HTTP 401" in refused.output and "Incorrect API key" in refused.output
    assert wrong_key not in refused.output
    assert not out.exists()
    for path in tmp_path.rglob("*"):  # nor in the ledger, the run directory or the journal
        assert not path.is_file() or wrong_key.encode() not in path.read_bytes(), path
    assert emulator.state.count("POST", CHAT, 200) == 0  # nothing paid
    # Stopped at once, not row after row: at most the requests already handed to the workers.
    assert 1 <= emulator.state.count("POST", CHAT, 401) <= 2 * 2

    monkeypatch.setenv("XAI_API_KEY", EMULATOR_KEY)  # fixed: the same command finishes the run
    finished = CliRunner().invoke(app, args)
    assert finished.exit_code == 0, finished.output
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 12
    assert emulator.state.count("POST", CHAT, 200) == 12


class CancelAfterAnswers:
    """on_start hook: a watcher thread records `grok-batch cancel` in the ledger (from its own
    connection, as the CLI would) once the emulator has answered `answers` requests."""

    def __init__(self, server: RunningEmulator, data_dir: Path, answers: int) -> None:
        self.server, self.data_dir, self.answers = server, data_dir, answers
        self.thread: threading.Thread | None = None
        self.fired = False

    def __call__(self, _: Ledger, handle: runner.RunHandle) -> None:
        self.thread = threading.Thread(target=self._watch, args=(handle.run_key,), daemon=True)
        self.thread.start()

    def _watch(self, run_key: str) -> None:
        deadline = time.monotonic() + 20
        while self.server.state.count("POST", CHAT, 200) < self.answers:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        other = Ledger(default_ledger_url(self.data_dir))
        other.update_run(run_key, cancel_requested=True)  # what `grok-batch cancel` records
        other.close()
        self.fired = True

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=25)
        assert self.fired, "the cancel was never requested"


def assert_cancelled_rows(out: Path, server: RunningEmulator, total: int) -> list[dict[str, Any]]:
    rows = rows_of(out)
    assert len(rows) == total and {r["attempts"] for r in rows} == {1}  # no follow-up round
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    cancelled = [r for r in rows if r["status"] == "cancelled"]
    assert len(succeeded) == server.state.count("POST", CHAT, 200)  # the rows sent kept their answers
    assert {r["status"] for r in rows} <= {"succeeded", "cancelled"} and cancelled, {
        r["status"]: r["error"] for r in rows if r["status"] not in ("succeeded", "cancelled")
    }
    assert all(r["error"] == "the run was cancelled before this request was sent" for r in cancelled)
    return cancelled


def test_cancel_during_a_sync_run_cancels_the_shards_not_yet_sent(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    src = write_csv(tmp_path / "in.csv", review_rows(40))
    out, data_dir = tmp_path / "out.parquet", tmp_path / "data"
    job = build_job(
        None, {**JOB, "shard_max_lines": 10, "sync_concurrency": 2, "sync_requests_per_minute": 600}
    )
    canceller = CancelAfterAnswers(emulator, data_dir, 3)
    summary, handle = run_pipeline(src, job, data_dir, out, canceller)
    canceller.join()
    cancelled = assert_cancelled_rows(out, emulator, 40)
    assert len(cancelled) >= 20  # at least the last two shards never went out
    assert summary.rounds == 1
    assert_answers_on_their_rows(out, handle.run_dir)


def test_cancel_mid_shard_stops_sending_at_the_next_heartbeat(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    # One shard of 80 rows at 10 requests/s needs 8 s; the cancel comes after 5 answers
    # and is seen at the shard's heartbeat (every 5 s).
    src = write_csv(tmp_path / "in.csv", review_rows(80))
    out, data_dir = tmp_path / "out.parquet", tmp_path / "data"
    job = build_job(None, {**JOB, "sync_concurrency": 2, "sync_requests_per_minute": 600})
    canceller = CancelAfterAnswers(emulator, data_dir, 5)
    summary, handle = run_pipeline(src, job, data_dir, out, canceller)
    canceller.join()
    cancelled = assert_cancelled_rows(out, emulator, 80)
    assert cancelled and summary.rounds == 1
    assert_answers_on_their_rows(out, handle.run_dir)


def test_cancel_before_anything_was_sent_cancels_every_row_without_a_call(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    src = write_csv(tmp_path / "in.csv", review_rows(20))
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "shard_max_lines": 10})

    def cancel_at_once(ledger: Ledger, handle: runner.RunHandle) -> None:
        ledger.update_run(handle.run_key, cancel_requested=True)

    run_pipeline(src, job, tmp_path / "data", out, cancel_at_once)
    assert emulator.state.request_log == []
    cancelled = assert_cancelled_rows(out, emulator, 20)
    assert len(cancelled) == 20


def test_model_the_batch_endpoint_refuses_still_runs_in_sync_mode(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    # The catalog marks grok-4.5 as refused by the batch endpoint, and its error says to use
    # `mode: sync`; sync must then not be refused by the same check.
    src = write_csv(tmp_path / "in.csv", review_rows(5))
    out = tmp_path / "out.parquet"
    _, handle = run_pipeline(src, build_job(None, {**JOB, "model": "grok-4.5"}), tmp_path / "data", out)
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 5
    assert emulator.state.count("POST", CHAT, 200) == 5 and paths_used(emulator) == {CHAT}
    assert_answers_on_their_rows(out, handle.run_dir)


def test_a_reply_that_is_not_a_completion_fails_its_row_and_loses_no_paid_answer(tmp_path: Path) -> None:
    # A proxy answers one request with an HTML page (status 200): that row fails (and is
    # retried next round); every other answer is journaled; nothing escapes the shard.
    import http.server
    import json as jsonlib

    from emulator.completions import chat_completion as completion
    from tasks.infra.ratelimit import RateLimiter
    from tasks.providers.xai import XaiProvider
    from tasks.stages.answer_sync import SyncLimits, answer_shard

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = jsonlib.loads(self.rfile.read(int(self.headers["Content-Length"])))
            html = "r3" in body["messages"][-1]["content"]
            data = b"<html>bad gateway</html>" if html else jsonlib.dumps(completion(body, 0)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if html else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        shard = tmp_path / "shard.jsonl"
        lines = [
            {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "grok-4.3", "messages": [{"role": "user", "content": f"row r{i}"}]}}
            for i in range(8)
        ]  # fmt: skip
        shard.write_text("".join(jsonlib.dumps(line) + "\n" for line in lines))
        journal = tmp_path / "journal.jsonl"
        journal.write_bytes(b'{"custom_id": "c0", "sta')  # a line torn by an earlier crash
        provider = XaiProvider(f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="k")
        limits = SyncLimits(concurrency=4, requests_per_minute=60_000)
        done = answer_shard(
            provider, shard, journal, limits, RateLimiter(60_000, 10**9), heartbeat=lambda _: True
        )
    finally:
        server.shutdown()
        server.server_close()
    records = read_journal(journal)
    assert done and sorted(records) == [f"c{i}" for i in range(8)]
    assert records["c3"]["status"] == "failed" and records["c3"]["retryable"] is True
    assert records["c3"]["error"].startswith("unexpected reply: JSONDecodeError")
    assert all(records[f"c{i}"]["status"] == "succeeded" for i in range(8) if i != 3)
