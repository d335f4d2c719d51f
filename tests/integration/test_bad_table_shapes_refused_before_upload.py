"""A table whose shape cannot work (duplicated column names, an id column that cannot be an id,
more request files than a run plans) is refused with a message naming the column or setting,
before anything is uploaded, and leaves no run files behind."""

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks.infra.errors import InputError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.spec.job import build_job
from tasks.start import start_run

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}


def start(path: Path, tmp: Path, job: dict) -> None:
    ledger = Ledger(default_ledger_url(tmp / "data"))
    try:
        start_run(TableSource(path), build_job(None, job), tmp / "data" / "runs", ledger, tmp / "out.parquet")
    finally:
        ledger.close()


def csv(content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "in.csv"
        path.write_bytes(content)
        return path

    return make


def parquet(table: pa.Table) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "in.parquet"
        pq.write_table(table, path)
        return path

    return make


TEXT = pa.array(["a", "b"])
WITH_ID = {**JOB, "id_column": "id"}
CASES = [
    (
        "duplicated csv header",
        csv(b"id,text,note,text\n1,a,x,b\n"),
        JOB,
        r"in.csv: column name 'text' appears 2 times; every column needs its own name",
    ),
    (
        "duplicated parquet column",
        parquet(pa.Table.from_arrays([TEXT, TEXT, TEXT], names=["text", "id", "id"])),
        JOB,
        r"in.parquet: column name 'id' appears 2 times; every column needs its own name",
    ),
    (
        "struct id",
        parquet(pa.table({"id": [{"k": 1}, {"k": 2}], "text": TEXT})),
        WITH_ID,
        r"in.parquet: id_column 'id' has type struct<k: int64>, which cannot be an id",
    ),
    (
        "list id",
        parquet(pa.table({"id": [[1], [2]], "text": TEXT})),
        WITH_ID,
        r"id_column 'id' has type list<.*int64>, which cannot be an id",
    ),
    (
        "binary id",
        parquet(pa.table({"id": pa.array([b"\x00", b"\x01"]), "text": TEXT})),
        WITH_ID,
        r"id_column 'id' has type binary, which cannot be an id; use a column of text or numbers",
    ),
    (
        "absurd shard count, parquet",
        parquet(pa.table({"text": [f"t{i}" for i in range(10_001)]})),
        {**JOB, "shard_max_lines": 1},
        r"in.parquet: 10,001 rows at shard_max_lines 1 need more than 10,000 request files, the most "
        r"one run plans; raise shard_max_lines",
    ),
    (
        "absurd shard count, csv",
        csv(b"text\n" + b"".join(b"t%d\n" % i for i in range(10_001))),
        {**JOB, "shard_max_lines": 1},
        r"in.csv: the first 10,001 requests at shard_max_lines 1 already need more than 10,000 request "
        r"files, the most one run plans; raise shard_max_lines",
    ),
]


@pytest.mark.parametrize(("make", "job", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_table_shape_is_refused_before_upload(
    tmp_path: Path, emulator: RunningEmulator, make: Callable[[Path], Path], job: dict, message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError, match=message):
        start(path, tmp_path, job)
    assert emulator.state.request_log == []
    runs = tmp_path / "data" / "runs"
    assert not runs.exists() or [p.name for p in runs.iterdir() if p.name != "cache"] == []


def test_a_plan_of_exactly_the_limit_is_accepted(tmp_path: Path, emulator: RunningEmulator) -> None:
    path = csv(b"text\n" + b"".join(b"t%d\n" % i for i in range(10_000)))(tmp_path)
    ledger = Ledger(default_ledger_url(tmp_path / "data"))
    try:
        job = build_job(None, {**JOB, "shard_max_lines": 1})
        handle = start_run(
            TableSource(path), job, tmp_path / "data" / "runs", ledger, tmp_path / "out.parquet"
        )
    finally:
        ledger.close()
    assert len(handle.plan.shards) == 10_000
