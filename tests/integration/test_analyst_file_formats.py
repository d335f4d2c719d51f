"""Issue 15, the files analysts have and open: the same table as CSV, gzipped or zstd CSV, JSON
Lines, NDJSON or an Excel sheet (the first one, or a named one) gets the same answers on the same
rows; anything else is refused, naming the file, before anything is uploaded; the job's
`output_formats` give a CSV and an Excel copy of the output holding every row, and a table
over Excel's row limit gets no Excel copy but a note, its Parquet written all the same."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from emulator import RunningEmulator
from tasks import runner, start
from tasks.infra.errors import InputError
from tasks.infra.ledger import Ledger, default_ledger_url
from tasks.infra.table_io import TableSource
from tasks.providers.registry import make_provider
from tasks.spec.job import JobSpec, build_job
from tasks.stages import export
from tasks.stages.report import RunSummary
from tests.helpers import advance_until_complete, assert_answers_on_their_rows, run_to_end

COLUMNS = ["id", "text", "stars"]
ROWS: list[dict[str, Any]] = [
    {"id": f"R{i:03d}", "text": text, "stars": i % 5 + 1}
    for i, text in enumerate(
        [
            "Great kettle, boils fast",
            'Said "never again", then bought two',
            "Zerbrochen angekommen; Rückgabe läuft",
            "一般般，还行",
            "line one\nline two, with a comma",
            "",  # an empty cell
            "emoji 😀 and tabs\tinside",
            "007",
            "  leading and trailing spaces  ",
            "=1+1 is not a formula here",
            "Ünïcödé ñ ß",
            "last one",
        ]
    )
]
JOB = {"model": "grok-4.3", "prompt": "Review {{ id }} ({{ stars }} stars): {{ text }}", "id_column": "id"}


def _csv_bytes() -> bytes:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(ROWS)
    return text.getvalue().encode("utf-8")


def write_csv_file(path: Path) -> Path:
    path.write_bytes(_csv_bytes())
    return path


def write_csv_gz(path: Path) -> Path:
    path.write_bytes(gzip.compress(_csv_bytes()))
    return path


def write_csv_zst(path: Path) -> Path:
    with pa.output_stream(str(path), compression="zstd") as stream:
        stream.write(_csv_bytes())
    return path


def write_json_lines(path: Path) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS), encoding="utf-8")
    return path


def write_xlsx(path: Path, sheet_name: str | None = None) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    if sheet_name is not None:  # a decoy first sheet, with other columns, before the table
        sheet.title = "Notes"
        sheet.append(["remark", "by"])
        sheet.append(["not the table", "someone"])
        sheet = workbook.create_sheet(sheet_name)
    else:
        sheet.title = "Reviews"
    sheet.append(COLUMNS)
    for row in ROWS:
        sheet.append([row["id"], row["text"] or None, row["stars"]])  # Excel has no empty text
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # the text as typed, not a formula
    workbook.save(path)
    return path


def write_xlsx_named(path: Path) -> Path:
    return write_xlsx(path, sheet_name="Reviews 2024")


def answers(output: Path) -> dict[str, tuple[str, str]]:
    table = pq.read_table(output, columns=["id", "status", "response"])
    return {row["id"]: (row["status"], row["response"]) for row in table.to_pylist()}


def run_source(
    source: TableSource, job: JobSpec, data_dir: Path, output: Path
) -> tuple[RunSummary, runner.RunHandle]:
    """`run_to_end` for a TableSource with options of its own (an Excel sheet)."""
    ledger = Ledger(default_ledger_url(data_dir))
    try:
        provider = make_provider(job.provider, job.base_url)
        handle = start.start_run(source, job, data_dir / "runs", ledger, output)
        advance_until_complete(ledger, provider, handle)
        return runner.finish(ledger, handle, output, False), handle
    finally:
        ledger.close()


@pytest.fixture
def csv_answers(tmp_path: Path, emulator: RunningEmulator) -> dict[str, tuple[str, str]]:
    """The answers the plain CSV of the table gets (its own data folder: no row cache shared)."""
    source = write_csv_file(tmp_path / "reviews.csv")
    output = tmp_path / "csv-out" / "reviews.parquet"
    summary, handle = run_to_end(source, build_job(None, JOB), tmp_path / "csv-data", output)
    assert summary.by_status["succeeded"] == len(ROWS)
    assert_answers_on_their_rows(output, handle.run_dir)
    return answers(output)


FORMATS: list[tuple[str, Callable[[Path], Path]]] = [
    ("reviews.csv.gz", write_csv_gz),
    ("reviews.csv.zst", write_csv_zst),
    ("reviews.jsonl", write_json_lines),
    ("reviews.ndjson", write_json_lines),
    ("reviews.xlsx", write_xlsx),
]


@pytest.mark.parametrize(("name", "make"), FORMATS, ids=[name for name, _ in FORMATS])
def test_each_input_format_gets_the_answers_of_the_same_table_as_csv(
    tmp_path: Path,
    emulator: RunningEmulator,
    csv_answers: dict[str, tuple[str, str]],
    name: str,
    make: Callable[[Path], Path],
) -> None:
    source = make(tmp_path / name)
    output = tmp_path / "out" / "reviews.parquet"
    summary, handle = run_to_end(source, build_job(None, JOB), tmp_path / "data", output)
    assert summary.by_status["succeeded"] == len(ROWS)
    assert_answers_on_their_rows(output, handle.run_dir)
    assert answers(output) == csv_answers  # the same prompts, so the same answers, row by row
    table = pq.read_table(output)
    assert table.column("text").to_pylist() == [row["text"] for row in ROWS]  # "" stays "", never null
    assert table.column("id").to_pylist() == [row["id"] for row in ROWS]
    stars = table.schema.field("stars").type
    assert stars == (pa.string() if ".csv" in name else pa.int64())  # CSV text, JSON/Excel numbers


def test_a_named_excel_sheet_gets_the_answers_of_the_same_table_as_csv(
    tmp_path: Path, emulator: RunningEmulator, csv_answers: dict[str, tuple[str, str]]
) -> None:
    path = write_xlsx_named(tmp_path / "reviews.xlsx")
    job = build_job(None, {**JOB, "sheet": "Reviews 2024"})
    output = tmp_path / "out" / "reviews.parquet"
    summary, handle = run_source(TableSource(path).with_sheet(job.sheet), job, tmp_path / "data", output)
    assert summary.by_status["succeeded"] == len(ROWS)
    assert_answers_on_their_rows(output, handle.run_dir)
    assert answers(output) == csv_answers
    # The join read the sheet the run prepared from (named in its saved schema), not the first.
    assert pq.read_table(output).column_names[:3] == COLUMNS


def test_the_jobs_sheet_field_alone_picks_the_sheet(tmp_path: Path, emulator: RunningEmulator) -> None:
    path = write_xlsx_named(tmp_path / "reviews.xlsx")
    job = build_job(None, {**JOB, "sheet": "Reviews 2024"})
    output = tmp_path / "out" / "reviews.parquet"
    summary, _ = run_to_end(path, job, tmp_path / "data", output)
    assert summary.by_status["succeeded"] == len(ROWS)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.txt", b"id,text\n1,a\n", r"notes\.txt: unsupported format '\.txt'"),
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            r"old\.xls: unsupported format '\.xls'.*save it as \.xlsx",
        ),
        ("data.json", b'[{"text": "a"}]', r"data\.json: unsupported format '\.json'.*\.jsonl"),
        ("fake.xlsx", b"id,text\n1,a\n", r"fake\.xlsx is not a readable Excel workbook"),
        ("broken.csv.gz", b"not gzip at all", r"broken\.csv\.gz cannot be read as gzip-compressed CSV"),
        ("mixed.jsonl", b'{"text": "a"}\n{"text": 7}\n', r"mixed\.jsonl: column 'text' holds string values"),
    ],
    ids=["txt", "xls", "json", "xlsx that is not a workbook", "csv.gz that is not gzip", "mixed json types"],
)
def test_unsupported_or_unreadable_file_is_refused_naming_it_before_upload(
    tmp_path: Path, emulator: RunningEmulator, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=expected):
        run_to_end(
            path,
            build_job(None, {**JOB, "prompt": "{{ text }}", "id_column": None}),
            tmp_path / "data",
            tmp_path / "o.parquet",
        )
    assert emulator.state.request_log == []
    assert not (tmp_path / "o.parquet").exists()


def _parquet_rows(output: Path) -> tuple[list[str], list[dict[str, Any]]]:
    table = pq.read_table(output)
    return table.column_names, table.to_pylist()


def test_excel_and_csv_copies_hold_every_row_as_the_parquet(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    source = write_csv_file(tmp_path / "reviews.csv")
    job = build_job(None, {**JOB, "output_formats": ["csv", "xlsx"]})
    output = tmp_path / "out" / "reviews.parquet"
    summary, _ = run_to_end(source, job, tmp_path / "data", output)
    assert summary.notes == [] and summary.by_status["succeeded"] == len(ROWS)
    names, rows = _parquet_rows(output)

    workbook = openpyxl.load_workbook(output.with_suffix(".xlsx"), read_only=True)
    sheet_rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    workbook.close()
    assert list(sheet_rows[0]) == names
    assert len(sheet_rows) == 1 + len(rows)
    for got, want in zip(sheet_rows[1:], rows, strict=True):
        # An Excel cell holds no empty text: "" and null are both an empty cell (and openpyxl
        # gives a row only up to its last cell that holds something).
        assert [*got, *[None] * (len(names) - len(got))] == [None if v == "" else v for v in want.values()]
    assert any(row["response"] for row in rows)  # the answers are there, in their columns
    formula_row = next(r for r in sheet_rows if r[0] == "R009")
    assert formula_row[1] == "=1+1 is not a formula here"  # text, never a formula

    parquet = pq.read_table(output)
    back = pacsv.read_csv(
        output.with_suffix(".csv"),
        convert_options=pacsv.ConvertOptions(
            column_types=parquet.schema, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )
    assert back.equals(parquet)  # "" and null kept apart, numbers and booleans as written


def test_a_table_over_excels_row_limit_gets_no_excel_copy_but_a_note(
    tmp_path: Path,
    emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(export, "EXCEL_MAX_ROWS", 6)  # a header and 5 rows; the table has 12
    source = write_csv_file(tmp_path / "reviews.csv")
    job = build_job(None, {**JOB, "output_formats": ["xlsx", "csv"]})
    output = tmp_path / "out" / "reviews.parquet"
    with caplog.at_level(logging.WARNING):
        summary, handle = run_to_end(source, job, tmp_path / "data", output)
    assert pq.read_table(output).num_rows == len(ROWS)  # the Parquet has every row
    assert output.with_suffix(".csv").exists()  # and the copy that has no limit
    assert not output.with_suffix(".xlsx").exists()
    assert len(summary.notes) == 1
    note = summary.notes[0]
    assert "reviews.xlsx was not written" in note and f"{len(ROWS):,} rows" in note and "5 below" in note
    report = (tmp_path / "out" / "reviews.report.md").read_text(encoding="utf-8")
    assert "## Notes" in report and note in report
    assert note in caplog.text  # the run's log says it too
    ledger = Ledger(default_ledger_url(tmp_path / "data"))
    try:
        assert (ledger.run(handle.run_key) or {})["state"] == "finished"  # the run still finishes
    finally:
        ledger.close()


def test_a_cell_over_excels_limit_is_cut_with_a_marker_and_counted(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    long_text = "word " * 8000  # 40,000 characters: more than an Excel cell holds
    rows = [{**ROWS[0], "text": long_text}, *ROWS[1:3]]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    job = build_job(None, {**JOB, "output_formats": ["xlsx"], "prompt": "{{ id }}"})
    output = tmp_path / "out" / "long.parquet"
    summary, _ = run_to_end(path, job, tmp_path / "data", output)
    assert pq.read_table(output).column("text").to_pylist()[0] == long_text  # the Parquet has it all
    assert len(summary.notes) == 1 and "1 cell(s) longer than Excel's 32,767 characters" in summary.notes[0]
    assert "text: 1" in summary.notes[0]
    workbook = openpyxl.load_workbook(output.with_suffix(".xlsx"), read_only=True)
    cell = list(workbook.worksheets[0].iter_rows(values_only=True))[1][1]
    workbook.close()
    assert len(cell) <= export.EXCEL_MAX_CELL_CHARS and cell.endswith("the Parquet has all 40,000]")
    assert long_text.startswith(cell[: cell.index("…[cut")])
    assert not math.isnan(summary.cost_usd)
