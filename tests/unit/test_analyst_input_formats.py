"""Issue 15, the inputs analysts have, read as Arrow record batches: a compressed CSV's cells
are text as written, like a CSV's; JSON Lines keep JSON's types (strings that look like dates
stay text, nested values stay nested); an Excel sheet keeps columns of numbers, booleans and
dates typed and reads any other column as text; anything else, or a file that does not read
as its name says, is an error naming the file. Compound suffixes name inbox files right."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest

from tasks.doors import inbox
from tasks.infra import table_io
from tasks.infra.errors import InputError
from tasks.infra.table_io import FORMATS, SHEET_METADATA, TableSource, split_table_name, table_suffix
from tasks.spec.job import build_job
from tasks.stages.prepare import identify, prepare_run

CSV = b'id,zip,note,text\n007,01234,,"first, with ""quotes"""\n7,1234,"",second\n'
TEXT_SCHEMA = pa.schema([(name, pa.string()) for name in ("id", "zip", "note", "text")])


def read(source: TableSource) -> pa.Table:
    return pa.Table.from_batches(list(source.batches()), schema=pa.schema(list(source.schema())))


def compress(data: bytes, codec: str) -> bytes:
    """`data` as a file compressed with `codec` would hold it (gzip and bz2 by Python's own)."""
    if codec == "gzip":
        return gzip.compress(data)
    if codec == "bz2":
        return bz2.compress(data)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as stream:
        stream.write(data)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    ("name", "codec"),
    [("in.csv.gz", "gzip"), ("in.csv.bz2", "bz2"), ("in.csv.zst", "zstd"), ("in.CSV.LZ4", "lz4")],
)
def test_a_compressed_csv_is_text_as_written_like_a_csv(tmp_path: Path, name: str, codec: str) -> None:
    path = tmp_path / name
    path.write_bytes(compress(CSV, codec))
    source = TableSource(path)
    assert source.format == "csv" and source.compression == codec
    assert source.schema() == TEXT_SCHEMA
    table = read(source)
    assert table.to_pylist() == [
        {"id": "007", "zip": "01234", "note": "", "text": 'first, with "quotes"'},
        {"id": "7", "zip": "1234", "note": "", "text": "second"},
    ]
    assert table.column("note").null_count == 0  # empty is "", never null


def test_an_empty_compressed_csv_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(InputError, match=r"e\.csv\.gz is empty"):
        TableSource(path).schema()


JSON_ROWS = [
    {
        "id": "007",
        "n": 1,
        "x": 1,
        "day": "2024-05-01",
        "ok": True,
        "meta": {"a": 1},
        "tags": ["x"],
        "none": None,
    },
    {"id": "8", "n": 2, "x": 2.5, "day": "2024-06-01", "ok": False, "meta": {"a": 2, "c": "k"}, "tags": []},
]


def test_json_lines_keep_json_types_and_dates_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    # CRLF line ends and a blank line are fine; a key missing from a line is null there.
    path.write_bytes(b"\r\n\r\n".join(json.dumps(row).encode() for row in JSON_ROWS) + b"\r\n")
    source = TableSource(path)
    assert source.schema() == pa.schema(
        [
            ("id", pa.string()),
            ("n", pa.int64()),
            ("x", pa.float64()),  # a fraction anywhere: the column is float
            ("day", pa.string()),  # Arrow would make these timestamps; they stay text
            ("ok", pa.bool_()),
            ("meta", pa.struct([("a", pa.int64()), ("c", pa.string())])),
            ("tags", pa.list_(pa.string())),
            ("none", pa.string()),  # null in every line: no type of its own, read as text
        ]
    )
    assert source.row_count() == 2
    rows = read(source).to_pylist()
    assert [r["id"] for r in rows] == ["007", "8"] and [r["day"] for r in rows] == [
        "2024-05-01",
        "2024-06-01",
    ]
    assert [r["x"] for r in rows] == [1.0, 2.5] and rows[1]["meta"] == {"a": 2, "c": "k"}
    assert [r["none"] for r in rows] == [None, None]


def test_json_line_types_are_learned_over_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_io, "_JSON_CHUNK_BYTES", 64)  # many chunks: types seen late still count
    path = tmp_path / "in.ndjson"
    lines = [{"text": f"t{i}", "score": i} for i in range(40)] + [{"text": "late", "score": 0.5, "new": "n"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    source = TableSource(path)
    assert source.schema() == pa.schema(
        [("text", pa.string()), ("score", pa.float64()), ("new", pa.string())]
    )
    table = read(source)
    assert table.num_rows == 41 and table.column("score").to_pylist()[-2:] == [39.0, 0.5]
    assert table.column("new").to_pylist() == [None] * 40 + ["n"]


def test_a_json_column_that_changes_kind_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_io, "_JSON_CHUNK_BYTES", 64)
    path = tmp_path / "in.jsonl"
    # The last line, longer than a chunk, is a chunk of its own: its type meets the others' in the merge.
    lines = [{"zip": 1234 + i} for i in range(30)] + [{"zip": "01234", "note": "x" * 100}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(
        InputError, match=r"in\.jsonl: column 'zip' holds int64 values before line 31 and string"
    ):
        TableSource(path).schema()
    path.write_text('{"zip": 1}\n{"zip": "x"}\n', encoding="utf-8")  # within one chunk
    with pytest.raises(InputError, match=r"column 'zip' holds number values and, near line 2, string"):
        TableSource(path).schema()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a": 1}\n[1, 2]\n', r"near line 2 is not a JSON object"),
        (b'{"a": 1}\n{"a": 1,}\n', r"near line 1: not valid JSON Lines"),
        (b"\n  \n", r"holds no JSON object"),
    ],
    ids=["array line", "broken line", "blank lines only"],
)
def test_json_lines_that_are_not_objects_are_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"bad\.jsonl.*" + expected):
        TableSource(path).schema()


def test_json_lines_are_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"JSON Lines are UTF-8.*--encoding latin-1 applies to CSV"):
        TableSource(path, encoding="latin-1").schema()


def test_a_nested_json_column_in_a_template_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in JSON_ROWS), encoding="utf-8")
    job = build_job(None, {"model": "grok-4.3", "prompt": "{{ id }}: {{ meta }}"})
    with pytest.raises(InputError, match=r"in\.jsonl: column 'meta' has type struct<.*flatten it"):
        prepare_run(TableSource(path), job, tmp_path / "runs")
    plain = build_job(None, {"model": "grok-4.3", "prompt": "{{ id }} {{ n }} {{ x }} {{ ok }} {{ day }}"})
    plan = prepare_run(TableSource(path), plain, tmp_path / "runs")
    prompts = [
        json.loads(line)["body"]["messages"][-1]["content"]
        for line in Path(plan.shards[0].path).read_text(encoding="utf-8").splitlines()
    ]
    assert prompts == ["007 1 1 true 2024-05-01", "8 2 2.5 false 2024-06-01"]


def workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


SHEET: list[list[object]] = [
    [None],  # rows before the header that hold nothing are skipped
    ["id", "n", "x", "ok", "day", "at", "mixed", "note"],
    ["007", 1, 1, True, dt.datetime(2024, 5, 1), dt.datetime(2024, 5, 1, 13, 30), 3, "a"],
    [None, None, None, None, None, None, None, None],  # an empty row is skipped, like a CSV's
    ["8", 2, 2.5, False, dt.datetime(2024, 5, 2), dt.datetime(2024, 5, 2, 8, 0, 5), "x", None],
    ["9", None, 4, None, None, None, 4.5, "c"],
    ["10", 4, 5, True, dt.datetime(2024, 5, 3), dt.datetime(2024, 5, 3), True, "d"],
    ["11", 5, 6, True, dt.datetime(2024, 5, 4), dt.datetime(2024, 5, 4), dt.datetime(2024, 5, 4), "e"],
]


def test_an_excel_sheet_keeps_typed_columns_and_reads_the_rest_as_text(tmp_path: Path) -> None:
    source = TableSource(workbook(tmp_path / "in.xlsx", {"Data": SHEET}))
    schema = source.schema()
    assert schema == pa.schema(
        [
            ("id", pa.string()),
            ("n", pa.int64()),
            ("x", pa.float64()),
            ("ok", pa.bool_()),
            ("day", pa.date32()),  # every one at midnight
            ("at", pa.timestamp("s")),
            ("mixed", pa.string()),  # numbers, text, booleans and dates: text
            ("note", pa.string()),
        ]
    )
    assert schema.metadata == {SHEET_METADATA: b"Data"}  # the sheet read, saved with the run's schema
    assert source.row_count() == 5
    table = read(source)
    assert table.column("id").to_pylist() == ["007", "8", "9", "10", "11"]
    assert table.column("n").to_pylist() == [1, 2, None, 4, 5]  # an empty typed cell is null
    assert table.column("x").to_pylist() == [1.0, 2.5, 4.0, 5.0, 6.0]
    assert table.column("mixed").to_pylist() == ["3", "x", "4.5", "TRUE", "2024-05-04"]
    assert table.column("note").to_pylist() == ["a", "", "c", "d", "e"]  # an empty text cell is ""
    assert table.column("day").to_pylist()[0] == dt.date(2024, 5, 1)
    assert table.column("at").to_pylist()[1] == dt.datetime(2024, 5, 2, 8, 0, 5)


def test_the_first_sheet_or_the_named_one_and_the_runs_saved_sheet_wins(tmp_path: Path) -> None:
    path = workbook(tmp_path / "in.xlsx", {"First": [["a"], ["1st"]], "Second": [["b"], ["2nd"], ["3rd"]]})
    assert read(TableSource(path)).to_pylist() == [{"a": "1st"}]
    second = TableSource(path).with_sheet("Second")
    assert read(second).to_pylist() == [{"b": "2nd"}, {"b": "3rd"}]
    # The join builds a plain TableSource: the schema the run saved names the sheet it read.
    saved = second.schema()
    assert pa.Table.from_batches(list(TableSource(path).batches(saved))).to_pylist() == [
        {"b": "2nd"},
        {"b": "3rd"},
    ]


def test_another_sheet_is_another_run(tmp_path: Path) -> None:
    path = workbook(tmp_path / "in.xlsx", {"A": [["t"], ["x"]], "B": [["t"], ["y"]]})
    job = {"model": "grok-4.3", "prompt": "{{ t }}"}

    def key(sheet: str | None) -> str:
        spec = build_job(None, {**job, "sheet": sheet})
        return identify(TableSource(path).with_sheet(spec.sheet), spec).run_key

    assert len({key(None), key("A"), key("B")}) == 3


@pytest.mark.parametrize(
    ("sheets", "sheet", "expected"),
    [
        ({"S": []}, None, r"sheet 'S' is empty: no header row"),
        ({"S": [["id", "text"]]}, None, r"sheet 'S' has a header but no data rows"),
        (
            {"S": [["id", None, "text"], [1, 2, 3]]},
            None,
            r"sheet 'S': column B has no name in the header \(row 1\)",
        ),
        (
            {"S": [["id"], [1, None, "x"]]},
            None,
            r"sheet 'S': row 2 has a value in column C, right of the header",
        ),
        ({"S": [["id"], [1]], "T": [["id"], [2]]}, "Nope", r"has no sheet 'Nope'; its sheets: 'S', 'T'"),
    ],
    ids=["empty sheet", "header only", "unnamed column", "value beyond the header", "unknown sheet"],
)
def test_an_unusable_sheet_is_a_clear_error(
    tmp_path: Path, sheets: dict[str, list[list[object]]], sheet: str | None, expected: str
) -> None:
    path = workbook(tmp_path / "in.xlsx", sheets)
    with pytest.raises(InputError, match=r"in\.xlsx.*" + expected):
        TableSource(path, sheet=sheet).schema()


def test_a_sheet_named_for_a_file_that_has_none_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV)
    with pytest.raises(InputError, match=r"in\.csv: `sheet` 'Data' names a sheet of an Excel workbook"):
        TableSource(path, sheet="Data").schema()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("t.txt", r"t\.txt: unsupported format '\.txt'; use \.csv, \.jsonl or \.ndjson"),
        ("t.xls", r"t\.xls: unsupported format '\.xls'.*save it as \.xlsx"),
        ("t.json.gz", r"t\.json\.gz: unsupported format '\.json\.gz'"),
        ("t", r"unsupported format '\(no extension\)'"),
    ],
)
def test_an_unsupported_file_is_named_with_what_to_do(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"a\n1\n")
    with pytest.raises(InputError, match=expected):
        TableSource(path).check_readable()


def test_compound_suffixes() -> None:
    assert FORMATS[".csv.gz"] == "csv" and FORMATS[".ndjson.zst"] == "jsonl" and ".xlsx.gz" not in FORMATS
    assert table_suffix("reviews.CSV.GZ") == ".CSV.GZ" and table_suffix(Path("a/b.xlsx")) == ".xlsx"
    assert table_suffix("archive.tar.gz") is None and table_suffix(".csv") is None
    assert split_table_name("reviews--0123.csv.gz") == ("reviews--0123", ".csv.gz")
    assert split_table_name("reviews.job.yaml") == ("reviews.job", ".yaml")  # not a table: as Path splits


def test_inbox_names_keep_a_compound_suffix_whole(tmp_path: Path) -> None:
    layout = inbox.InboxLayout.under(tmp_path)
    layout.ensure()
    assert inbox.dropped_name(layout.processing / "reviews--0123456789ab.csv.gz") == "reviews.csv.gz"
    assert inbox.dropped_name(layout.processing / "my--data--0123456789ab.jsonl") == "my--data.jsonl"
    assert inbox.output_for("reviews.csv.gz", "f" * 64, layout) == layout.outbox / "reviews.parquet"
    (layout.outbox / "reviews.parquet").touch()
    assert (
        inbox.output_for("reviews.xlsx", "f" * 64, layout) == layout.outbox / "reviews--ffffffffffff.parquet"
    )
    for name in ("a.csv.gz", "b.ndjson", "c.xlsx", "d.txt", "e.job.yaml"):
        (layout.inbox / name).write_bytes(b"x")
    assert [p.name for p in inbox.settled_tables(layout.inbox, settle_s=0)] == [
        "a.csv.gz",
        "b.ndjson",
        "c.xlsx",
    ]
    failed = inbox.fail(layout.inbox / "a.csv.gz", "broken", layout)
    assert failed.name == "a.csv.gz" and (layout.failed / "a.error.md").exists()
    (layout.inbox / "a.csv.gz").write_bytes(b"y")
    assert inbox.fail(layout.inbox / "a.csv.gz", "again", layout).name == "a.1.csv.gz"
