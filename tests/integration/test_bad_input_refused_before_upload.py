"""Every bad input gets a clear error naming the file, row, column or setting, before
anything is uploaded (the emulator's request log stays empty)."""

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks.infra.errors import GrokBatchError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.spec.job import build_job
from tasks.start import start_run

JOB = {"model": "grok-4.3", "prompt": "Classify: {{ text }}"}


def start(
    path: Path,
    tmp: Path,
    job: dict | None = None,
    encoding: str = "utf-8",
    output: Path | None = None,
    overwrite: bool = False,
):
    ledger = Ledger(default_ledger_url(tmp / "data"))
    try:
        return start_run(
            TableSource(path, encoding=encoding),
            build_job(None, job or JOB),
            tmp / "data" / "runs",
            ledger,
            output or tmp / "out.parquet",
            overwrite,
        )
    finally:
        ledger.close()


def write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content)
        return path

    return make


def nested_parquet(tmp: Path) -> Path:
    path = tmp / "nested.parquet"
    pq.write_table(pa.table({"text": [["a", "b"]], "n": [1]}), path)
    return path


def missing(tmp: Path) -> Path:
    return tmp / "nope.csv"


def a_folder(tmp: Path) -> Path:
    (tmp / "folder.csv").mkdir()
    return tmp / "folder.csv"


CASES = [
    ("missing file", missing, JOB, r"nope.csv does not exist"),
    ("not a file", a_folder, JOB, r"folder.csv is not a file"),
    ("unsupported format", write("t.xls", b"\xd0\xcf\x11\xe0"), JOB, r"t.xls: unsupported format '.xls'"),
    ("not a workbook", write("t.xlsx", b"PK\x03\x04"), JOB, r"t.xlsx is not a readable Excel workbook"),
    ("empty file", write("e.csv", b""), JOB, r"e.csv is empty"),
    ("header only", write("h.csv", b"id,text\n"), JOB, r"h.csv has a header but no data rows"),
    (
        "corrupt parquet",
        write("c.parquet", b"not parquet at all"),
        JOB,
        r"c.parquet is not a readable Parquet",
    ),
    (
        "template column missing",
        write("m.csv", b"id,body\n1,x\n"),
        JOB,
        r"column\(s\) 'text'.*Columns present: id, body",
    ),
    (
        "duplicate ids",
        write("d.csv", b"id,text\n1,a\n1,b\n"),
        {**JOB, "id_column": "id"},
        r"id_column 'id' has 1 duplicated value\(s\), e.g. '1'",
    ),
    (
        "null ids",
        write("n.csv", b"id,text\n1,a\n,b\n"),
        {**JOB, "id_column": "id"},
        r"'id' is empty on data row 2",
    ),
    (
        "invalid utf-8",
        write("u.csv", b"id,text\n1,caf\xe9\n"),
        JOB,
        r"'text' are not valid utf-8.*--encoding",
    ),
    (
        "ragged rows",
        write("r.csv", b"id,text\n1,a\n2,b,c\n"),
        JOB,
        r"r.csv: a row has a different number.*2,b,c",
    ),
    ("nested type in template", nested_parquet, JOB, r"column 'text' has type list<.*flatten it"),
    (
        "result column clash",
        write("s.csv", b"text,status\na,new\n"),
        JOB,
        r"'status' clash with the result columns.*result_prefix",
    ),
]


@pytest.mark.parametrize(("make", "job", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_upload(
    tmp_path: Path, emulator: RunningEmulator, make: Callable[[Path], Path], job: dict, message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(GrokBatchError, match=message):
        start(path, tmp_path, job)
    assert emulator.state.request_log == []


def test_encoding_option_reads_latin1(tmp_path: Path) -> None:
    path = write("u.csv", b"id,text\n1,caf\xe9\n")(tmp_path)
    handle = start(path, tmp_path, encoding="latin-1")
    line = Path(handle.plan.shards[0].path).read_text(encoding="utf-8")
    assert "Classify: café" in line


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = write("bom.csv", b"\xef\xbb\xbftext,n\nhello,1\n")(tmp_path)
    handle = start(path, tmp_path)
    assert "Classify: hello" in Path(handle.plan.shards[0].path).read_text(encoding="utf-8")


def test_nulls_in_template_columns_render_empty(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["x", None], "score": [1.5, None]}), path)
    handle = start(path, tmp_path, {**JOB, "prompt": "T={{ text }} S={{ score }}"})
    content = Path(handle.plan.shards[0].path).read_text(encoding="utf-8")
    assert "T=x S=1.5" in content and "T= S=" in content
    assert "None" not in content and "nan" not in content


def test_output_that_exists_or_cannot_be_written(tmp_path: Path, emulator: RunningEmulator) -> None:
    path = write("ok.csv", b"text\na\n")(tmp_path)
    existing = tmp_path / "exists.parquet"
    existing.write_bytes(b"keep me")
    with pytest.raises(GrokBatchError, match=r"exists.parquet already exists; pass --overwrite"):
        start(path, tmp_path, output=existing)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(GrokBatchError, match=r"cannot be written: .*a-file is not a writable folder"):
        start(path, tmp_path, output=blocker / "out.parquet")
    with pytest.raises(GrokBatchError, match=r"must end in .parquet"):
        start(path, tmp_path, output=tmp_path / "out.csv")
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    with pytest.raises(GrokBatchError, match=r"folder.parquet is a folder; name a .parquet file in it"):
        start(path, tmp_path, output=folder, overwrite=True)  # was: paid, then failed at the join
    assert existing.read_bytes() == b"keep me"
    assert emulator.state.request_log == []


def test_malformed_job_file_is_named(tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text("model: grok-4.3\nprompt: [unclosed\n")
    with pytest.raises(GrokBatchError, match=r"job.yaml is not valid YAML"):
        build_job(job_file)
