"""Every row ends in exactly one outcome: partial failure, expiry, cancellation, storms."""

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from emulator import RunningEmulator
from tasks import runner, start
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.providers.xai import XaiProvider
from tasks.spec.job import build_job
from tests.helpers import advance_until_complete, assert_answers_on_their_rows, run_to_end, write_csv

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}


def drive(
    src: Path,
    job: dict,
    data: Path,
    out: Path,
    on_progress: Callable[[runner.Progress, XaiProvider, Ledger], None],
) -> list[dict]:
    ledger = Ledger(default_ledger_url(data))
    provider = XaiProvider()
    handle = start.start_run(TableSource(src), build_job(None, job), data / "runs", ledger, out)
    deadline = time.monotonic() + 60
    while not (progress := runner.advance(ledger, provider, handle)).complete:
        on_progress(progress, provider, ledger)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner.finish(ledger, handle, out, overwrite=False)
    ledger.close()
    return pq.read_table(out).to_pylist()


def test_expired_batch_keeps_finished_rows_and_retries_the_rest(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(processing_s=3.0, expire_after_s=1.0)

    def extend_deadline_in_round_two(progress: runner.Progress, *_: object) -> None:
        if progress.round_no == 2:
            emulator.configure(expire_after_s=86_400.0, processing_s=0.2)

    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(40)])
    rows = drive(src, JOB, data_dir, tmp_path / "out.parquet", extend_deadline_in_round_two)
    assert all(r["status"] == "succeeded" for r in rows)
    attempts = [r["attempts"] for r in rows]
    assert attempts.count(1) > 0 and attempts.count(2) > 0  # finished rows kept, pending rows retried
    assert emulator.state.count("POST", "/v1/batches", 200) == 2
    cancels = [e for e in emulator.state.request_log if e[0] == "POST" and e[1].endswith(":cancel")]
    assert len(cancels) == 1  # the expired batch is stopped before its rows are sent again
    assert_answers_on_their_rows(tmp_path / "out.parquet", next((data_dir / "runs").iterdir()))


def test_expiry_on_the_last_attempt_ends_rows_expired(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(processing_s=3.0, expire_after_s=1.0)
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(40)])
    summary = run_to_end(
        src, build_job(None, {**JOB, "max_attempts": 1}), data_dir, tmp_path / "out.parquet"
    )[0]
    assert summary.by_status["succeeded"] > 0 and summary.by_status["expired"] > 0
    assert summary.by_status["succeeded"] + summary.by_status["expired"] == 40
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert all("expired before this request" in r["error"] for r in rows if r["status"] == "expired")


def test_cancelled_batch_keeps_results_and_does_not_retry(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(processing_s=3.0)
    cancelled: list[str] = []

    def cancel_midway(progress: runner.Progress, provider: XaiProvider, ledger: Ledger) -> None:
        rows = ledger.batches(next(iter(r["run_key"] for r in ledger.open_runs())))
        if not cancelled and progress.finished >= 5 and rows[0].batch_id:
            provider.cancel(rows[0].batch_id)
            cancelled.append(rows[0].batch_id)

    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(40)])
    rows = drive(src, JOB, data_dir, tmp_path / "out.parquet", cancel_midway)
    statuses = [r["status"] for r in rows]
    assert statuses.count("succeeded") >= 5 and statuses.count("cancelled") > 0
    assert statuses.count("succeeded") + statuses.count("cancelled") == 40
    assert all(r["attempts"] == 1 for r in rows) and emulator.state.count("POST", "/v1/batches", 200) == 1


def test_storm_of_429_500_and_dropped_connections_still_completes(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(rate_429=0.3, rate_500=0.1, drop_rate=0.05, drop_after_create_rate=0.3, seed=5)
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i} great"} for i in range(60)])
    job = build_job(None, {**JOB, "shard_max_lines": 15})
    summary = run_to_end(src, job, data_dir, tmp_path / "out.parquet")[0]
    assert summary.by_status["succeeded"] == 60
    assert emulator.state.count("POST", "/v1/batches", 200) == 4  # lost replies found by name
    faults = [e for e in emulator.state.request_log if e[2] in (0, 429, 500)]
    assert len(faults) >= 10
    assert_answers_on_their_rows(tmp_path / "out.parquet", data_dir / "runs" / summary.run_key)


def test_cancelled_run_sends_nothing_more_and_plans_no_round(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.configure(processing_s=1.0, fail_rate=0.5)
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(30)])
    ledger = Ledger(default_ledger_url(data_dir))
    provider = XaiProvider()
    job = build_job(None, {**JOB, "shard_max_lines": 10, "max_attempts": 3})
    handle = start.start_run(TableSource(src), job, data_dir / "runs", ledger, tmp_path / "out.parquet")
    first = ledger.batches(handle.run_key)[0]
    runner.PLAIN_STAGES.submit(ledger, provider, handle)  # all three shards go out
    ledger.update_run(handle.run_key, cancel_requested=True)  # what `grok-batch cancel` records
    provider.cancel(ledger.batches(handle.run_key)[0].batch_id or "")
    advance_until_complete(ledger, provider, handle)
    runner.finish(ledger, handle, tmp_path / "out.parquet", overwrite=False)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(rows) == 30 and all(r["attempts"] == 1 for r in rows)  # failures not sent again
    assert emulator.state.count("POST", "/v1/batches", 200) == 3
    first_now = ledger.batches(handle.run_key)[0]
    assert first.batch_name == first_now.batch_name and first_now.state == "cancelled"
    ledger.close()


def test_cancel_before_submission_closes_every_shard_without_a_call(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [{"text": f"t{i}"} for i in range(30)])
    ledger = Ledger(default_ledger_url(data_dir))
    job = build_job(None, {**JOB, "shard_max_lines": 10})
    handle = start.start_run(TableSource(src), job, data_dir / "runs", ledger, tmp_path / "out.parquet")
    ledger.update_run(handle.run_key, cancel_requested=True)
    assert runner.advance(ledger, XaiProvider(), handle).complete
    runner.finish(ledger, handle, tmp_path / "out.parquet", overwrite=False)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"cancelled"}
    assert rows[0]["error"] == "the run was cancelled before this request was sent"
    assert emulator.state.request_log == []
    ledger.close()
