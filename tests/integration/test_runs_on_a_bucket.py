"""A run whose input, output, run folder and row cache are all on a bucket (a real S3 server,
SeaweedFS) gives the table a run from local disk gives, row for row; bad storage names are
refused before anything is uploaded to the service."""

from __future__ import annotations

import shutil
from pathlib import Path
from subprocess import CompletedProcess

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks.infra.storage import locate
from tests.helpers import EMULATOR_KEY, review_rows, run_cli, write_csv
from tests.s3_server import RunningS3

JOB = "name: bucket\nmodel: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
SAME_EVERYWHERE = ["custom_id", "status", "response", "prompt_tokens", "completion_tokens", "cost_usd"]


def _cli(args: list[str], emulator: RunningEmulator, work: Path, **env: str) -> str:
    """`grok-batch ARGS` on a machine whose working copies live in `work`; its stdout."""
    done = _attempt(args, emulator, work, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _attempt(args: list[str], emulator: RunningEmulator, work: Path, **env: str) -> CompletedProcess[str]:
    return run_cli(
        args, "", XAI_BASE_URL=emulator.url, XAI_API_KEY=EMULATOR_KEY, GROK_BATCH_WORK_DIR=str(work), **env
    )


def _tables(tmp_path: Path) -> dict[str, Path]:
    csv = write_csv(tmp_path / "reviews.csv", review_rows(40))
    parquet = tmp_path / "reviews.parquet"
    pq.write_table(pacsv.read_csv(csv), parquet)
    return {"csv": csv, "parquet": parquet}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_run_on_the_bucket_equals_the_run_on_local_disk(
    fmt: str, s3_env: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    table = _tables(tmp_path)[fmt]
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    locate(f"{s3_env}/in/{table.name}").upload(table)

    local_out = tmp_path / "local" / "out.parquet"
    _cli(["run", str(table), "--job", str(job), "-o", str(local_out), "--data-dir", str(tmp_path / "data")],
         emulator, tmp_path / "work-local")  # fmt: skip
    shown = _cli(
        ["run", f"{s3_env}/in/{table.name}", "--job", str(job), "-o", f"{s3_env}/out/reviews.parquet",
         "--data-dir", f"{s3_env}/grok"],
        emulator, tmp_path / "work-bucket",
    )  # fmt: skip

    assert f"output: {s3_env}/out/reviews.parquet" in " ".join(shown.split())  # rich wraps lines
    from_bucket = _download(f"{s3_env}/out/reviews.parquet", tmp_path / "fetched.parquet")
    from_disk = pq.read_table(local_out)
    assert from_bucket.num_rows == from_disk.num_rows == 40
    assert from_bucket.column_names == from_disk.column_names
    assert from_bucket.select(SAME_EVERYWHERE).equals(from_disk.select(SAME_EVERYWHERE))
    assert set(from_bucket.column("status").to_pylist()) == {"succeeded"}
    assert "| succeeded | 40 |" in locate(f"{s3_env}/out/reviews.report.md").read_text()

    # Everything a run must keep is on the bucket: the plan, shards, results, the row cache.
    stored = [loc.url.removeprefix(f"{s3_env}/grok/") for loc, _ in locate(f"{s3_env}/grok").files(True)]
    run_files = {name.split("/", 2)[2] for name in stored if name.startswith("runs/")}
    assert {"run.json", "rows.parquet", "requests/round1-shard00000.jsonl"} <= run_files
    assert any(name.startswith("results/") for name in run_files)
    assert any(name.startswith("cache/") for name in stored)
    assert emulator.state.count("POST", "/v1/batches", 200) == 2  # one batch per run, no more


def _download(url: str, local: Path) -> pa.Table:
    locate(url).download(local)
    return pq.read_table(local)


def test_another_machine_finishes_a_run_from_the_bucket_alone(
    s3_env: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A run submitted with --no-wait on one machine is resumed on another whose working copy is
    empty: the plan, shards and answers come from the bucket, nothing is sent twice."""
    emulator.configure(processing_s=1.0)
    table = _tables(tmp_path)["csv"]
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    locate(f"{s3_env}/in/reviews.csv").upload(table)
    ledger = f"sqlite:///{tmp_path / 'shared-ledger.sqlite'}"  # stands for the team's PostgreSQL
    args = ["--data-dir", f"{s3_env}/grok"]
    output = f"{s3_env}/out/r.parquet"
    first = _cli(
        ["run", f"{s3_env}/in/reviews.csv", "--job", str(job), "-o", output, "--no-wait", *args],
        emulator, tmp_path / "machine-a", GROK_BATCH_LEDGER_URL=ledger,
    )  # fmt: skip
    assert f"--data-dir {s3_env}/grok" in " ".join(
        first.split()
    )  # how to go on names the bucket, not a local copy
    run_key = next(word for word in first.split() if len(word) == 16 and word.isalnum())

    shutil.rmtree(tmp_path / "machine-a")  # its working copy is a cache: gone with the machine
    _cli(["resume", run_key, *args], emulator, tmp_path / "machine-b", GROK_BATCH_LEDGER_URL=ledger)
    assert list((tmp_path / "machine-b").rglob("run.json"))  # its plan came from the bucket
    table_out = _download(f"{s3_env}/out/r.parquet", tmp_path / "r.parquet")
    assert table_out.num_rows == 40 and set(table_out.column("status").to_pylist()) == {"succeeded"}
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
    assert emulator.state.count("POST", "/v1/files", 200) == 1


def test_a_run_killed_after_its_first_upload_is_finished_by_another_machine(
    s3_env: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Machine a uploads one of two request files and is SIGKILLed; machine b, with an empty
    working copy, reruns the command: it re-attaches to the run, creates a batch from the file
    a uploaded and uploads the other from its own copy of the shard (the ledger names the
    shard as a planned it, on a's disk), sending nothing twice."""
    table = _tables(tmp_path)["csv"]
    job = tmp_path / "job.yaml"
    job.write_text(JOB + "shard_max_lines: 20\n")
    locate(f"{s3_env}/in/reviews.csv").upload(table)
    ledger = f"sqlite:///{tmp_path / 'shared-ledger.sqlite'}"
    command = ["run", f"{s3_env}/in/reviews.csv", "--job", str(job), "-o", f"{s3_env}/out/k.parquet",
               "--data-dir", f"{s3_env}/grok"]  # fmt: skip
    killed = _attempt(
        command,
        emulator,
        tmp_path / "machine-a",
        GROK_BATCH_LEDGER_URL=ledger,
        GROK_BATCH_CRASH_AT="after_upload",
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert emulator.state.count("POST", "/v1/files", 200) == 1
    shutil.rmtree(tmp_path / "machine-a")  # its disk is gone with it: b has only the bucket

    _cli(command, emulator, tmp_path / "machine-b", GROK_BATCH_LEDGER_URL=ledger)
    table_out = _download(f"{s3_env}/out/k.parquet", tmp_path / "k.parquet")
    assert table_out.num_rows == 40 and set(table_out.column("status").to_pylist()) == {"succeeded"}
    assert emulator.state.count("POST", "/v1/files", 200) == 2  # each request file once
    assert emulator.state.count("POST", "/v1/batches", 200) == 2  # each batch once


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("{prefix}/in/missing.csv", "{prefix}/in/missing.csv does not exist"),
        ("s3://no-such-bucket-here/in/reviews.csv", "s3://no-such-bucket-here/in/reviews.csv"),
        ("s4://bucket/reviews.csv", "unknown storage scheme 's4://'"),
    ],
)
def test_a_bad_input_name_is_refused_naming_it_before_any_upload(
    name: str, expected: str, s3_env: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    done = _attempt(
        ["run", name.format(prefix=s3_env), "--job", str(job), "-o", str(tmp_path / "o.parquet"),
         "--data-dir", str(tmp_path / "data")],
        emulator, tmp_path / "w",
    )  # fmt: skip
    assert done.returncode != 0
    assert expected.format(prefix=s3_env) in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert emulator.state.count("POST", "/v1/files", 200) == 0


def test_a_denied_output_write_is_refused_before_any_upload(
    s3_server: RunningS3, s3_env: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    table = _tables(tmp_path)["csv"]
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    reader = s3_server.env(s3_server.reader)
    done = _attempt(
        ["run", str(table), "--job", str(job), "-o", f"{s3_env}/out/denied.parquet",
         "--data-dir", str(tmp_path / "data")],
        emulator, tmp_path / "w", **reader,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"{s3_env}/out/denied.parquet: cannot write it: access denied" in done.stderr + done.stdout
    assert reader["AWS_SECRET_ACCESS_KEY"] not in done.stderr + done.stdout
    assert emulator.state.count("POST", "/v1/files", 200) == 0
