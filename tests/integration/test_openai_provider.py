"""Provider openai: the whole pipeline against the emulator's OpenAI Batch protocol
(/openai/v1) with the real openai SDK over HTTP, including OpenAI's traps (reference §2.3, §7):
expired batches holding paid results, `completed` with every row in the error file, an
empty-string error_file_id, a file refused at validation, a lost create reply, and crashes."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from emulator.completions import chat_completion
from tasks import runner, start
from tasks.infra import crashpoints
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.providers.openai_compat import NAME_KEY, OpenAIBatchProvider
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec, build_job
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

BATCHES = "/openai/v1/batches"
FILES = "/openai/v1/files"
REASONING_MODEL = "grok-4.20-0309-reasoning"
JOB = {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Classify: {{ text }}"}
# For tests that read the batches' output and error files at the service after the run
# (a run deletes them once collected otherwise).
KEEP_FILES = {"keep_service_files": True}


def run_pipeline(
    src: Path,
    job: JobSpec,
    data_dir: Path,
    out: Path,
    on_progress: Callable[[runner.Progress], None] | None = None,
    timeout_s: float = 30.0,
) -> tuple[RunSummary, Path]:
    summary, handle = run_to_end(src, job, data_dir, out, timeout_s=timeout_s, on_progress=on_progress)
    return summary, handle.run_dir


def rows_of(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out).to_pylist()


def openai_batches(server: RunningEmulator) -> list[Any]:
    """The emulator's OpenAI batches in creation order."""
    return [server.state.openai.batches[batch_id] for batch_id in server.state.openai.order]


def file_lines(server: RunningEmulator, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    content = server.state.files[file_id].content.decode("utf-8")
    return [json.loads(line) for line in content.split("\n") if line.strip()]


def xai_paths_used(server: RunningEmulator) -> list[str]:
    return [e.path for e in server.state.request_log if not e.path.startswith("/openai/")]


def test_openai_pipeline_answers_every_row_once_per_shard_with_normalized_tokens(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    src = write_csv(tmp_path / "in.csv", review_rows(50))
    job = build_job(None, {**JOB, "model": REASONING_MODEL, "id_column": "id", "shard_max_lines": 20})
    assert isinstance(make_provider(job.provider, job.base_url), OpenAIBatchProvider)
    out = tmp_path / "openai.parquet"
    summary, run_dir = run_pipeline(src, job, tmp_path / "data-openai", out)

    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(50)]
    assert [r["status"] for r in rows] == ["succeeded"] * 50
    assert {r["attempts"] for r in rows} == {1} and summary.rounds == 1
    assert_answers_on_their_rows(out, run_dir)
    # three shards (20 + 20 + 10), each created exactly once, each with our name in metadata
    assert openai_emulator.state.count("POST", BATCHES, 200) == 3
    assert openai_emulator.state.count("POST", BATCHES) == 3
    names = [b.metadata[NAME_KEY] for b in openai_batches(openai_emulator)]
    assert len(set(names)) == 3 and all(name.startswith("grok-batch-") for name in names)
    assert {r["batch_id"] for r in rows} == {b.batch_id for b in openai_batches(openai_emulator)}
    assert openai_emulator.state.count("POST", FILES, 200) == 3
    uploads = {b.input_file_id for b in openai_batches(openai_emulator)}
    assert uploads.isdisjoint(openai_emulator.state.files)  # request files deleted once collected
    assert xai_paths_used(openai_emulator) == []  # nothing went to the xAI routes

    # Token convention: completion_tokens excludes reasoning, whoever answered. OpenAI's own
    # completion_tokens (as the emulator reported it) includes the reasoning tokens.
    bodies = request_bodies(run_dir)
    for row in rows:
        reported = chat_completion(bodies[row["custom_id"]], 0, "openai")["usage"]
        assert row["reasoning_tokens"] > 0, row["custom_id"]
        assert row["completion_tokens"] + row["reasoning_tokens"] == reported["completion_tokens"]
        assert row["prompt_tokens"] == reported["prompt_tokens"]

    # The same rows as xAI batches: the token columns agree row by row.
    xai_out = tmp_path / "xai.parquet"
    run_pipeline(
        src, build_job(None, {**job.model_dump(), "provider": "xai"}), tmp_path / "data-xai", xai_out
    )
    assert openai_emulator.state.count("POST", "/v1/batches", 200) == 3
    token_columns = ("response", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
    xai_rows = rows_of(xai_out)
    for ours, theirs in zip(rows, xai_rows, strict=True):
        assert {c: ours[c] for c in token_columns} == {c: theirs[c] for c in token_columns}, ours["id"]


def expire_part_way(server: RunningEmulator) -> None:
    # 40 requests spread over 3 s, deadline after 1 s: about a third finish in round 1.
    server.configure(processing_s=3.0, expire_after_s=1.0)


def test_expired_batch_keeps_paid_rows_and_sends_only_the_rest_again(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    expire_part_way(openai_emulator)

    def normal_deadline_from_round_two(progress: runner.Progress) -> None:
        if progress.round_no == 2:
            openai_emulator.configure(expire_after_s=86_400.0, processing_s=0.2)

    src = write_csv(tmp_path / "in.csv", review_rows(40))
    out = tmp_path / "out.parquet"
    summary, run_dir = run_pipeline(
        src,
        build_job(None, {**JOB, "id_column": "id", **KEEP_FILES}),
        tmp_path / "data",
        out,
        normal_deadline_from_round_two,
    )
    first, second = openai_batches(openai_emulator)
    assert openai_emulator.state.openai.status(first)[0] == "expired"
    assert openai_emulator.state.openai.status(second)[0] == "completed"
    paid_in_round_one = {line["custom_id"] for line in file_lines(openai_emulator, first.output_file_id)}
    expired_lines = file_lines(openai_emulator, first.error_file_id)
    assert {line["error"]["code"] for line in expired_lines} == {"batch_expired"}
    expired_ids = {line["custom_id"] for line in expired_lines}
    assert paid_in_round_one and expired_ids and len(paid_in_round_one) + len(expired_ids) == 40

    rows = rows_of(out)
    assert [r["status"] for r in rows] == ["succeeded"] * 40
    assert {r["custom_id"] for r in rows if r["attempts"] == 1} == paid_in_round_one
    assert {r["custom_id"] for r in rows if r["attempts"] == 2} == expired_ids
    # round 2 sent exactly the expired rows, nothing paid twice
    assert set(second.custom_ids) == expired_ids
    assert openai_emulator.state.count("POST", BATCHES, 200) == 2 and summary.rounds == 2
    assert_answers_on_their_rows(out, run_dir)


def test_expiry_on_the_last_attempt_ends_the_rest_expired(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    expire_part_way(openai_emulator)
    src = write_csv(tmp_path / "in.csv", review_rows(40))
    out = tmp_path / "out.parquet"
    summary, run_dir = run_pipeline(
        src,
        build_job(None, {**JOB, "id_column": "id", "max_attempts": 1, **KEEP_FILES}),
        tmp_path / "data",
        out,
    )
    (batch,) = openai_batches(openai_emulator)
    paid = {line["custom_id"] for line in file_lines(openai_emulator, batch.output_file_id)}
    rows = rows_of(out)
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    expired = [r for r in rows if r["status"] == "expired"]
    assert succeeded and expired and len(succeeded) + len(expired) == 40
    assert {r["custom_id"] for r in succeeded} == paid
    for row in expired:
        assert row["response"] is None and row["attempts"] == 1
        assert row["error"] == "This request could not be executed before the completion window expired."
    assert summary.rounds == 1 and openai_emulator.state.count("POST", BATCHES, 200) == 1
    assert_answers_on_their_rows(out, run_dir)


def test_completed_with_every_row_in_the_error_file_fails_rows_after_all_attempts(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    openai_emulator.configure(fail_rate=1.0)
    src = write_csv(tmp_path / "in.csv", review_rows(20))
    out = tmp_path / "out.parquet"
    summary, _ = run_pipeline(
        src,
        build_job(None, {**JOB, "id_column": "id", "max_attempts": 3, **KEEP_FILES}),
        tmp_path / "data",
        out,
    )
    batches = openai_batches(openai_emulator)
    assert len(batches) == 3 and summary.rounds == 3  # first round and two follow-ups
    for batch in batches:  # the trap: `completed`, no output file, every row in the error file
        assert openai_emulator.state.openai.status(batch)[0] == "completed"
        assert batch.output_file_id is None and len(file_lines(openai_emulator, batch.error_file_id)) == 20
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(20)]  # none lost
    for row in rows:
        assert row["status"] == "failed" and row["attempts"] == 3 and row["response"] is None
        # the service's own text, naming this very request: it landed on its own row
        assert row["error"] == f"HTTP 500: Internal error while processing request {row['custom_id']}"
    assert summary.by_status.get("succeeded", 0) == 0 and summary.by_status["failed"] == 20


def test_empty_string_error_file_id_on_a_clean_batch(
    tmp_path: Path, openai_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_emulator.configure(error_file_id_empty=True)
    # The job's base_url wins over OPENAI_BASE_URL (here a port nothing listens on).
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    src = write_csv(tmp_path / "in.csv", review_rows(20))
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "id_column": "id", "base_url": openai_emulator.openai_url})
    summary, run_dir = run_pipeline(src, job, tmp_path / "data", out)
    (batch,) = openai_batches(openai_emulator)
    assert batch.error_file_id == "" and batch.output_file_id  # the trap was sprung
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 20 and summary.rounds == 1
    assert_answers_on_their_rows(out, run_dir)
    assert all(e.status == 200 for e in openai_emulator.state.request_log)  # no read of file ""


def test_file_refused_at_validation_fails_rows_with_the_service_message(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    openai_emulator.configure(openai_models=["gpt-4o-mini"])
    src = write_csv(tmp_path / "in.csv", review_rows(20))
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "id_column": "id", "model": "gpt-4.1-mini", "max_attempts": 3})
    summary, _ = run_pipeline(src, job, tmp_path / "data", out)
    (batch,) = openai_batches(openai_emulator)
    assert openai_emulator.state.openai.status(batch)[0] == "failed"
    assert summary.rounds == 1 and openai_emulator.state.count("POST", BATCHES, 200) == 1  # no follow-up
    service_message = "Model gpt-4.1-mini is not supported for batch processing."
    assert service_message in summary.rejected_files[0]
    rows = rows_of(out)
    assert len(rows) == 20
    for row in rows:
        assert row["status"] == "failed" and row["attempts"] == 1 and row["response"] is None
        assert "rejected the whole file" in row["error"] and service_message in row["error"]


def test_lost_create_reply_is_found_by_metadata_name(
    tmp_path: Path, openai_emulator: RunningEmulator
) -> None:
    openai_emulator.configure(drop_after_create_rate=1.0)  # every batch is created, every reply lost
    src = write_csv(tmp_path / "in.csv", review_rows(30))
    out = tmp_path / "out.parquet"
    job = build_job(None, {**JOB, "id_column": "id", "shard_max_lines": 10})
    summary, run_dir = run_pipeline(src, job, tmp_path / "data", out)
    assert openai_emulator.state.count("POST", BATCHES, 200) == 3  # one per shard, never resent
    assert len(openai_emulator.state.openai.batches) == 3
    assert openai_emulator.state.count("GET", BATCHES, 200) >= 3  # looked up by metadata instead
    assert [r["status"] for r in rows_of(out)] == ["succeeded"] * 30 and summary.rounds == 1
    assert {r["batch_id"] for r in rows_of(out)} == set(openai_emulator.state.openai.batches)
    assert_answers_on_their_rows(out, run_dir)


def test_catalogued_openai_model_gets_no_provider_mismatch_warning(
    tmp_path: Path, openai_emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    # gpt-4o-mini is listed under provider openai in the catalog and the job uses provider
    # openai: nothing to warn about.
    src = write_csv(tmp_path / "in.csv", review_rows(3))
    ledger = Ledger(default_ledger_url(tmp_path / "data"))
    try:
        with caplog.at_level(logging.WARNING, logger="grok_batch"):
            start.start_run(
                TableSource(src),
                build_job(None, JOB),
                tmp_path / "data" / "runs",
                ledger,
                tmp_path / "o.parquet",
            )
    finally:
        ledger.close()
    mismatch = [r.getMessage() for r in caplog.records if "but the job uses provider" in r.getMessage()]
    assert mismatch == []


# -- crash and rerun through the real CLI in a subprocess ----------------------------------
ROWS = 30
SHARD_LINES = 10  # three shards, three batches


def cli(
    args: list[str], server: RunningEmulator, api_url: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(args, api_url, OPENAI_BASE_URL=server.openai_url, OPENAI_API_KEY=EMULATOR_KEY, **env)


@pytest.mark.slow
@pytest.mark.parametrize("point", [crashpoints.AFTER_CREATE, crashpoints.WHILE_POLLING])
def test_openai_sigkill_then_rerun_creates_each_batch_once(
    tmp_path: Path, slow_emulator: RunningEmulator, point: str
) -> None:
    rows = [{"id": f"row-{i}", "text": f"review {i}: {'great' if i % 2 else 'broken'}"} for i in range(ROWS)]
    src, out, data_dir = write_csv(tmp_path / "in.csv", rows), tmp_path / "out.parquet", tmp_path / "data"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(f"shard_max_lines: {SHARD_LINES}\n")
    args = [
        "run", str(src), "--provider", "openai", "--model", "gpt-4o-mini", "--prompt", "Classify: {{ text }}",
        "--id-column", "id", "--job", str(job_file), "-o", str(out), "--data-dir", str(data_dir),
        "--poll-interval", "0.2",
    ]  # fmt: skip
    # In-process stages (no Prefect server): the crash points are in the stages both ways share.
    crashed = cli(args, slow_emulator, "", GROK_BATCH_CRASH_AT=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert not out.exists()
    assert slow_emulator.state.count("POST", BATCHES, 200) >= 1  # it died after paying for something
    rerun = cli(args, slow_emulator, "")
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"row-{i}" for i in range(ROWS)]
    assert table.column("status").to_pylist() == ["succeeded"] * ROWS
    assert slow_emulator.state.count("POST", BATCHES, 200) == ROWS // SHARD_LINES
    assert len(slow_emulator.state.openai.batches) == ROWS // SHARD_LINES
    assert slow_emulator.state.count("POST", FILES, 200) == ROWS // SHARD_LINES
    assert xai_paths_used(slow_emulator) == []
    assert_answers_on_their_rows(out, next((data_dir / "runs").iterdir()))
