"""Streaming reads of the input table as Arrow record batches: CSV, JSON Lines (either also
compressed: .gz, .bz2, .zst, .lz4), an Excel workbook's sheet (.xlsx, .xlsm) and Parquet.

- A CSV's cells are text exactly as written: no type is guessed (a guess turns the id "007"
  into 7 and the zip "01234" into 1234), and an empty cell is the empty string "", never null.
  A CSV row larger than the block Arrow parses at a time is read again with a larger block, up
  to `MAX_CSV_ROW_BYTES`. A compressed CSV is read the same way.
- JSON Lines hold one object a line and keep JSON's own types, as a Parquet file keeps its
  own: numbers stay numbers (int64, or float64 for a column with a fraction anywhere), true
  and false booleans, strings text (also those that look like dates), null null; nested
  objects and arrays stay nested (struct, list). A column holds one kind of value in every
  line; the file is read once to learn the types, then again for the rows.
- An Excel sheet (the first one, or the one named): its first non-empty row is the header. A
  column whose cells are all numbers keeps them as numbers (int64 when all are whole, else
  float64), all true/false as booleans, all dates as dates (date32 when every one is at
  midnight, else a timestamp); an empty cell there is null. Any other column is text, as in
  a CSV: numbers as Excel stores them (3, 4.5), TRUE/FALSE, dates as 2024-05-01, an empty
  cell "". Formulas give the value Excel last saved. Read twice, in read-only mode.
- A Parquet file's columns keep the types the file stores.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infra.errors import InputError
from tasks.infra.formats import Scan, csv, excel, jsonl
from tasks.infra.formats.csv import MAX_CSV_ROW_BYTES as MAX_CSV_ROW_BYTES
from tasks.infra.formats.excel import MAX_XLSX_SHARED_STRINGS_BYTES as MAX_XLSX_SHARED_STRINGS_BYTES
from tasks.infra.formats.excel import SHEET_METADATA as SHEET_METADATA
from tasks.infra.formats.jsonl import MAX_JSON_LINE_BYTES as MAX_JSON_LINE_BYTES
from tasks.infra.urls import is_remote
from tasks.infra.work_copies import fetch, url_for

# Compressions Arrow reads as a stream, by file suffix (a Parquet file compresses inside).
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
_PLAIN_FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_STREAMED = ("csv", "jsonl")  # the formats read as a byte stream, hence also compressed
# Table suffix (lower case, compound where compressed: ".csv.gz") -> format.
FORMATS = {
    **_PLAIN_FORMATS,
    **{base + ext: fmt for base, fmt in _PLAIN_FORMATS.items() if fmt in _STREAMED for ext in COMPRESSIONS},
}
_SUPPORTED = ".csv, .jsonl or .ndjson (each also compressed: .gz, .bz2, .zst, .lz4), .xlsx or .parquet"
_HINTS = {
    ".xls": "an Excel 97-2003 workbook: open it in Excel and save it as .xlsx",
    ".xlsb": "a binary Excel workbook: open it in Excel and save it as .xlsx",
    ".ods": "open it and save it as .xlsx or .csv",
    ".json": "JSON Lines (one object a line) are read when the file is named .jsonl",
    ".tsv": "save it as .csv",
}

# JSON Lines are parsed this many bytes (whole lines) at a time (read at each call: tests set it)
_JSON_CHUNK_BYTES = 8 << 20


def open_table(target: str | Path, encoding: str = "utf-8", sheet: str | None = None) -> TableSource:
    """The table a user names, by path or URL. An object on a store is streamed once into
    this machine's working copy and read there (tasks.infra.work_copies): a run reads its
    input several times, and one download costs less than several reads of the store."""
    return TableSource(fetch(target), encoding=encoding, sheet=sheet)


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def table_suffix(path: Path | str) -> str | None:
    """The table suffix of a file name as written, compound where the file is compressed
    (reviews.CSV.gz -> ".CSV.gz"), or None when the name is not one of a table grok-batch reads."""
    name = Path(path).name
    lowered = name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[-len(suffix) :]
    return None


def split_table_name(name: str) -> tuple[str, str]:
    """(stem, suffix) of a file name, with a table's compound suffix kept whole:
    reviews.csv.gz -> ("reviews", ".csv.gz"); other names split as Path does."""
    suffix = table_suffix(name)
    if suffix is None:
        path = Path(name)
        return path.stem, path.suffix
    return name[: -len(suffix)], suffix


def invalid_utf8(column: pa.Array) -> pa.Array | None:
    """Which cells of a text or bytes column are not valid UTF-8 (a boolean array, false on
    nulls), or None when every cell is (or the column holds neither text nor bytes)."""
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (_is_text(kind) or _is_bytes(kind)):
        return None
    raw = pc.cast(column, pa.large_binary())  # no copy of the data for text and bytes alike
    try:
        pc.cast(raw, pa.large_string())  # validates every cell in one pass
        return None
    except pa.ArrowInvalid:
        pass
    return pa.array([value is not None and not _decodes(value) for value in raw.to_pylist()], pa.bool_())


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_bytes(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def can_be_id(kind: pa.DataType) -> bool:
    """Whether a column of this type can identify rows: text or scalar values that read as
    text; not bytes, nested values (struct, list, map) or a column of nulls only."""
    value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if _is_bytes(value_kind) or pa.types.is_null(value_kind):
        return False
    try:
        pc.cast(pa.array([], type=kind), pa.string())
    except pa.ArrowNotImplementedError:
        return False
    return True


_SCANS: OrderedDict[tuple[Any, ...], Scan] = OrderedDict()
_SCANS_KEPT = 16  # files whose scan is remembered (by path, size, mtime and sheet)
_SCANS_LOCK = threading.Lock()


@dataclass(frozen=True)
class TableSource:
    """Where the input lives and how to read it: `encoding` for a CSV's text, `sheet` for the
    sheet of an Excel workbook (None: the first)."""

    path: Path
    encoding: str = "utf-8"
    sheet: str | None = None

    @property
    def shown(self) -> str:
        """How messages and records name the table: its URL when it was fetched from a store."""
        return url_for(self.path)

    @property
    def recorded_as(self) -> str:
        """How a run records its input: the URL it was fetched from, else the absolute path."""
        shown = self.shown
        return shown if is_remote(shown) else str(self.path.resolve())

    def with_sheet(self, sheet: str | None) -> TableSource:
        """This source reading `sheet` (a job's `sheet` field); itself when `sheet` is None."""
        return self if sheet is None else replace(self, sheet=sheet)

    @property
    def suffix(self) -> str:
        suffix = table_suffix(self.path)
        if suffix is None:
            raise InputError(self._unsupported())
        return suffix

    @property
    def format(self) -> str:
        """csv, jsonl, xlsx or parquet; an InputError naming the file for any other name."""
        return FORMATS[self.suffix.lower()]

    @property
    def compression(self) -> str | None:
        """The stream compression of a CSV or JSON Lines file (gzip, bz2, zstd, lz4), or None."""
        suffix = self.suffix.lower()
        return next((codec for ext, codec in COMPRESSIONS.items() if suffix.endswith(ext)), None)

    def _unsupported(self) -> str:
        shown = "".join(self.path.suffixes[-2:] if self.path.suffix.lower() in COMPRESSIONS else [])
        shown = shown or self.path.suffix or "(no extension)"
        hint = _HINTS.get(self.path.suffix.lower())
        return f"{self.shown}: unsupported format {shown!r}; use {_SUPPORTED}" + (
            f" ({hint})" if hint else ""
        )

    def check_readable(self) -> None:
        if not self.path.exists():
            raise InputError(f"input file {self.shown} does not exist")
        if not self.path.is_file():
            raise InputError(f"input {self.shown} is not a file")
        fmt = self.format
        if self.sheet is not None and fmt != "xlsx":
            raise InputError(
                f"{self.shown}: `sheet` {self.sheet!r} names a sheet of an Excel workbook, and this is a "
                f"{fmt} file; remove `sheet` from the job"
            )
        if fmt == "jsonl" and jsonl.normal_encoding(self.encoding) != "utf-8":
            raise InputError(
                f"{self.shown}: JSON Lines are UTF-8 (RFC 8259); --encoding {self.encoding} applies to "
                "CSV files"
            )
        try:
            with self.path.open("rb") as handle:
                first = handle.read(1)
        except OSError as exc:
            raise InputError(f"input file {self.shown} cannot be read: {exc.strerror}") from None
        if not first:
            raise InputError(f"input file {self.shown} is empty")

    def schema(self) -> pa.Schema:
        """The table's columns: a Parquet file's own types, text for every CSV column, the
        types JSON Lines or an Excel sheet hold (see the module). Refuses a table whose
        column names repeat."""
        self.check_readable()
        fmt = self.format
        if fmt == "parquet":
            schema = self._parquet().schema_arrow
        elif fmt == "csv":
            schema = pa.schema([pa.field(name, pa.string()) for name in csv.header(self)])
        else:
            schema = self._scan().schema
        repeated = {name: n for name, n in Counter(schema.names).items() if n > 1}
        if repeated:
            names = ", ".join(f"column name {name!r} appears {n} times" for name, n in repeated.items())
            raise InputError(f"{self.shown}: {names}; every column needs its own name (rename the repeats)")
        return schema

    def row_count(self) -> int | None:
        """The number of data rows where it is known before reading them: Parquet states it,
        the first pass over JSON Lines or a sheet counted it; None for a CSV."""
        fmt = self.format
        if fmt == "parquet":
            return self._parquet().metadata.num_rows
        if fmt == "csv":
            return None
        return self._scan().rows

    def batches(self, schema: pa.Schema | None = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Record batches of the table. `schema`: the types to read (those a run saved when it
        prepared, which for a workbook also name the sheet); the file's own without it."""
        fmt = self.format
        if fmt == "parquet":
            # pre_buffer=False: pre-buffering keeps whole row groups' bytes around, doubling the
            # peak memory on a file of many large row groups (bench/: 1.0 GB -> 0.5 GB at 10M rows).
            yield from pq.ParquetFile(self.path, pre_buffer=False).iter_batches(batch_size=batch_rows)
            return
        if schema is None:
            schema = self.schema()
        if fmt == "csv":
            yield from csv.batches(self, schema)
        elif fmt == "jsonl":
            yield from jsonl.batches(self, schema, batch_rows, _JSON_CHUNK_BYTES)
        else:
            yield from excel.batches(self, schema, batch_rows)

    # -- reading -------------------------------------------------------------
    def _parquet(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{self.shown} is not a readable Parquet file: {exc}") from None

    def _scan(self) -> Scan:
        """The first pass over JSON Lines or a sheet (types and rows), remembered per file."""
        stat = self.path.stat()
        key = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns, self.sheet, self.format)
        with _SCANS_LOCK:
            known = _SCANS.get(key)
            if known is not None:
                _SCANS.move_to_end(key)
                return known
        scan = jsonl.scan(self, _JSON_CHUNK_BYTES) if self.format == "jsonl" else excel.scan(self)
        with _SCANS_LOCK:
            _SCANS[key] = scan
            while len(_SCANS) > _SCANS_KEPT:
                _SCANS.popitem(last=False)
        return scan
