"""Issue 15, the outputs analysts open: the CSV and Excel copies of a finished Parquet hold
every value, and whatever Excel cannot hold as it is (a cell over 32,767 characters, control
characters, 16-digit numbers, too many rows or columns) is changed visibly and counted in a
note, or the copy is refused with one; never a silent cut, never a lost Parquet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tasks.stages import export
from tasks.stages.export import EXCEL_MAX_CELL_CHARS, export_output


def sheet_rows(path: Path) -> list[list[object]]:
    book = openpyxl.load_workbook(path, read_only=True)
    rows = [list(row) for row in book.worksheets[0].iter_rows(values_only=True)]
    book.close()
    return rows


def parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def test_what_excel_cannot_hold_is_changed_visibly_and_counted(tmp_path: Path) -> None:
    long_text = "😀" * 20_000  # 20,000 characters, 40,000 UTF-16 units: over the limit
    table = pa.table(
        {
            "text": [long_text, "bell\x07 and nul\x00 inside", "=SUM(A1:A2)", "plain", None],
            "big": pa.array([12_345_678_901_234_567, 7, -(10**15), None, 0], pa.int64()),
            "x": [float("nan"), float("inf"), 1.5, None, -0.0],
            "at": pa.array([dt.datetime(2024, 5, 1, 12, 0)] * 5, pa.timestamp("ns", tz="UTC")),
            "tags": [["a", "b"], [], None, ["c"], ["d"]],
            "raw": [b"\xff\x00", b"text", None, b"", b"x"],
            "kind": pa.array(["p", "q", "p", None, "q"]).dictionary_encode(),
        }
    )
    output = parquet(tmp_path / "out.parquet", table)
    written = output.read_bytes()
    notes = export_output(output, ["xlsx"])
    rows = sheet_rows(tmp_path / "out.xlsx")
    assert rows[0] == table.column_names
    cut = rows[1][0]
    assert isinstance(cut, str) and len(cut.encode("utf-16-le")) // 2 <= EXCEL_MAX_CELL_CHARS
    assert cut.endswith("the Parquet has all 20,000]") and cut.startswith("😀" * 100)
    assert rows[2][0] == "bell and nul inside"  # the control characters Excel refuses, removed
    assert rows[3][0] == "=SUM(A1:A2)"  # text, not a formula
    assert [row[1] for row in rows[1:]] == ["12345678901234567", 7, "-1000000000000000", None, 0]
    assert [row[2] for row in rows[1:4]] == ["nan", "inf", 1.5]
    assert rows[1][3] == "2024-05-01 12:00:00+00:00"  # Excel has no time zones: the moment as text
    assert [row[4] for row in rows[1:3]] == ['["a", "b"]', "[]"]
    assert [row[5] for row in rows[1:3]] == ["0xff00", "text"]
    assert [row[6] if len(row) > 6 else None for row in rows[1:]] == ["p", "q", "p", None, "q"]
    assert notes == [
        'out.xlsx: 1 cell(s) longer than Excel\'s 32,767 characters were cut to fit and end in "…[cut: …]" '
        "(text: 1); out.parquet holds the full text",
        "out.xlsx: 1 cell(s) held control characters Excel cannot store, removed there (text: 1); "
        "out.parquet keeps them",
        "out.xlsx: 2 whole number(s) of more than 15 digits are text there, which Excel would otherwise "
        "round (big: 2)",
    ]
    assert output.read_bytes() == written  # the Parquet is untouched


def test_the_csv_copy_reads_back_as_the_parquet(tmp_path: Path) -> None:
    table = pa.table(
        {
            "text": ['a, "quoted"\nline', "", None],
            "n": pa.array([1, None, 3], pa.int64()),
            "ok": [True, False, None],
            "cost": [0.1 + 0.2, 2.5e-05, None],
        }
    )
    output = parquet(tmp_path / "out.parquet", table)
    assert export_output(output, ["csv"]) == []
    back = pacsv.read_csv(
        tmp_path / "out.csv",
        convert_options=pacsv.ConvertOptions(
            column_types=table.schema, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )
    assert back.equals(table)  # "" and null apart, floats to the last digit


def test_nested_and_byte_columns_are_json_and_text_in_the_csv_copy(tmp_path: Path) -> None:
    table = pa.table({"tags": [["a"], None], "meta": [{"k": 1}, {"k": None}], "raw": [b"ok", b"\xfe"]})
    output = parquet(tmp_path / "out.parquet", table)
    assert export_output(output, ["csv"]) == []
    nulls = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
    back = pacsv.read_csv(tmp_path / "out.csv", convert_options=nulls).to_pylist()
    assert back == [
        {"tags": '["a"]', "meta": '{"k": 1}', "raw": "ok"},
        {"tags": None, "meta": '{"k": null}', "raw": "0xfe"},
    ]


def test_too_many_rows_or_columns_for_excel_refuse_the_copy_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = parquet(tmp_path / "out.parquet", pa.table({"a": list(range(10)), "b": list(range(10))}))
    monkeypatch.setattr(export, "EXCEL_MAX_ROWS", 10)  # the header and 9 rows
    [note] = export_output(output, ["xlsx", "csv"])
    assert note.startswith("out.xlsx was not written: the table has 10 rows and an Excel sheet holds 9 below")
    assert not (tmp_path / "out.xlsx").exists() and (tmp_path / "out.csv").exists()
    monkeypatch.setattr(export, "EXCEL_MAX_ROWS", 11)
    monkeypatch.setattr(export, "EXCEL_MAX_COLUMNS", 1)
    assert export_output(output, ["xlsx"]) == [
        "out.xlsx was not written: the table has 2 columns and an Excel sheet holds 1; "
        "out.parquet has every column"
    ]
    monkeypatch.setattr(export, "EXCEL_MAX_COLUMNS", 2)
    assert export_output(output, ["xlsx"]) == [] and len(sheet_rows(tmp_path / "out.xlsx")) == 11


def test_a_copy_replaces_a_file_only_when_allowed_and_never_the_input(tmp_path: Path) -> None:
    output = parquet(tmp_path / "reviews.parquet", pa.table({"a": ["x"]}))
    existing = tmp_path / "reviews.csv"
    existing.write_text("mine\n")
    [note] = export_output(output, ["csv"])
    assert "reviews.csv was not written: it already exists (pass --overwrite" in note
    assert existing.read_text() == "mine\n"
    [note] = export_output(output, ["csv"], overwrite=True, keep=[existing])
    assert "reviews.csv was not written: it is the run's input" in note and existing.read_text() == "mine\n"
    assert export_output(output, ["csv"], overwrite=True) == []
    assert existing.read_text() == '"a"\n"x"\n'


def test_a_copy_that_fails_leaves_a_note_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = parquet(tmp_path / "out.parquet", pa.table({"a": ["x"]}))

    def broken(source: Path, partial: Path, target: Path) -> list[str]:
        partial.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setitem(export._WRITERS, "xlsx", broken)
    assert export_output(output, ["xlsx"]) == ["out.xlsx was not written: OSError: disk full"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
