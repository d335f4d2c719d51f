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

import datetime as dt
import hashlib
import re
import threading
import warnings
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from tasks.infra.errors import InputError

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

_CSV_BLOCK_BYTES = 8 << 20  # parsed at a time; doubled (up to the next limit) for a larger row
MAX_CSV_ROW_BYTES = 256 << 20  # a larger CSV row refuses the file (a request holds 25 MB at most)
MAX_JSON_LINE_BYTES = MAX_CSV_ROW_BYTES  # the same for one line of JSON Lines
_JSON_CHUNK_BYTES = 8 << 20  # JSON Lines are parsed this many bytes (whole lines) at a time
# An Excel workbook's text is held in memory while its sheet streams (openpyxl reads the
# shared strings whole); a larger one is refused, as is anything that is not a workbook.
MAX_XLSX_SHARED_STRINGS_BYTES = 1 << 30
_CSV_TEXT_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error to \w+: invalid UTF8")
_ROW_OVER_BLOCK = "straddling object straddles two block boundaries"
_JSON_CHANGED = re.compile(r"Column\(([^)]*)\) changed from (\w+) to (\w+) in row (\d+)")
_JSON_MERGE = re.compile(r"Field (.+?) has incompatible types: (.+?) vs (.+?)(?:\n|$)")
SHEET_METADATA = b"grok_batch.sheet"  # in a workbook's schema: the sheet a run read


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


@dataclass(frozen=True)
class _Scan:
    """What a first pass over a JSON Lines file or an Excel sheet learned."""

    schema: pa.Schema
    rows: int


_SCANS: OrderedDict[tuple[Any, ...], _Scan] = OrderedDict()
_SCANS_KEPT = 16  # files whose scan is remembered (by path, size, mtime and sheet)
_SCANS_LOCK = threading.Lock()


@dataclass(frozen=True)
class TableSource:
    """Where the input lives and how to read it: `encoding` for a CSV's text, `sheet` for the
    sheet of an Excel workbook (None: the first)."""

    path: Path
    encoding: str = "utf-8"
    sheet: str | None = None

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
        return f"{self.path}: unsupported format {shown!r}; use {_SUPPORTED}" + (f" ({hint})" if hint else "")

    def check_readable(self) -> None:
        if not self.path.exists():
            raise InputError(f"input file {self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"input {self.path} is not a file")
        fmt = self.format
        if self.sheet is not None and fmt != "xlsx":
            raise InputError(
                f"{self.path}: `sheet` {self.sheet!r} names a sheet of an Excel workbook, and this is a "
                f"{fmt} file; remove `sheet` from the job"
            )
        if fmt == "jsonl" and _normal_encoding(self.encoding) != "utf-8":
            raise InputError(
                f"{self.path}: JSON Lines are UTF-8 (RFC 8259); --encoding {self.encoding} applies to "
                "CSV files"
            )
        try:
            with self.path.open("rb") as handle:
                first = handle.read(1)
        except OSError as exc:
            raise InputError(f"input file {self.path} cannot be read: {exc.strerror}") from None
        if not first:
            raise InputError(f"input file {self.path} is empty")

    def schema(self) -> pa.Schema:
        """The table's columns: a Parquet file's own types, text for every CSV column, the
        types JSON Lines or an Excel sheet hold (see the module). Refuses a table whose
        column names repeat."""
        self.check_readable()
        fmt = self.format
        if fmt == "parquet":
            schema = self._parquet().schema_arrow
        elif fmt == "csv":
            schema = pa.schema([pa.field(name, pa.string()) for name in self._csv_header()])
        else:
            schema = self._scan().schema
        repeated = {name: n for name, n in Counter(schema.names).items() if n > 1}
        if repeated:
            names = ", ".join(f"column name {name!r} appears {n} times" for name, n in repeated.items())
            raise InputError(f"{self.path}: {names}; every column needs its own name (rename the repeats)")
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
            yield from self._csv_batches(schema)
        elif fmt == "jsonl":
            yield from self._json_batches(schema, batch_rows)
        else:
            yield from self._sheet_batches(schema, batch_rows)

    # -- reading -------------------------------------------------------------
    def _parquet(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{self.path} is not a readable Parquet file: {exc}") from None

    def _stream(self) -> pa.NativeFile:
        """The file's bytes, decompressed where its name says it is compressed."""
        return pa.input_stream(str(self.path), compression=self.compression)

    def _scan(self) -> _Scan:
        """The first pass over JSON Lines or a sheet (types and rows), remembered per file."""
        stat = self.path.stat()
        key = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns, self.sheet, self.format)
        with _SCANS_LOCK:
            known = _SCANS.get(key)
            if known is not None:
                _SCANS.move_to_end(key)
                return known
        scan = self._scan_json() if self.format == "jsonl" else self._scan_sheet()
        with _SCANS_LOCK:
            _SCANS[key] = scan
            while len(_SCANS) > _SCANS_KEPT:
                _SCANS.popitem(last=False)
        return scan

    # -- CSV -----------------------------------------------------------------
    def _open_csv(self, column_types: dict[str, pa.DataType], block_size: int) -> pacsv.CSVStreamingReader:
        source: str | pa.NativeFile = str(self.path) if self.compression is None else self._stream()
        return pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(encoding=self.encoding, block_size=block_size),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            # strings_can_be_null=False (the default): an empty cell is "", never null
            convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False),
        )

    def _csv_header(self) -> list[str]:
        """The CSV's column names, as Arrow parses the header."""
        block_size = _CSV_BLOCK_BYTES
        while True:
            try:
                return list(self._open_csv({}, block_size).schema.names)
            except (pa.ArrowInvalid, UnicodeDecodeError, LookupError, OSError) as exc:
                block_size = self._larger_block(exc, block_size, [])

    def _csv_batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """The CSV's rows in `schema`'s types. A row larger than the parsing block is read
        again with a larger block, skipping the rows already given."""
        column_types = {f.name: f.type for f in schema}
        block_size, given = _CSV_BLOCK_BYTES, 0
        while True:
            skip = given
            try:
                for batch in self._open_csv(column_types, block_size):
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch, skip = batch.slice(skip), 0
                    given += batch.num_rows
                    yield batch
                return
            except (pa.ArrowInvalid, UnicodeDecodeError, LookupError, OSError) as exc:
                block_size = self._larger_block(exc, block_size, schema.names)

    def _larger_block(self, exc: Exception, block_size: int, names: list[str]) -> int:
        """The block size to read again with when `exc` is a row larger than the block; any
        other error (or a row past the limit) is explained to the user."""
        if _ROW_OVER_BLOCK not in str(exc):
            raise self._explain(exc, names) from None
        if block_size >= MAX_CSV_ROW_BYTES:
            raise InputError(
                f"{self.path}: a row is larger than {MAX_CSV_ROW_BYTES >> 20} MB, the most grok-batch "
                "reads in one CSV row (a request holds at most 25 MB); shorten that row, or check for "
                "a quote that is never closed"
            ) from None
        return min(block_size * 2, MAX_CSV_ROW_BYTES)

    def _explain(self, exc: Exception, names: list[str]) -> InputError:
        text = str(exc)
        if isinstance(exc, LookupError):
            return InputError(f"{self.path}: unknown encoding {self.encoding!r} (see --encoding)")
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowInvalid):
            return InputError(
                f"{self.path} cannot be read as {self.compression}-compressed CSV: {text.splitlines()[0]}"
                if self.compression
                else f"input file {self.path} cannot be read: {text.splitlines()[0]}"
            )
        if "Empty CSV file" in text:
            return InputError(f"input file {self.path} is empty")
        column = _CSV_TEXT_ERROR.search(text)
        if column and int(column.group(1)) < len(names):
            return InputError(
                f"{self.path}: column(s) {names[int(column.group(1))]!r} are not valid {self.encoding}; "
                "pass the file's real encoding with --encoding, e.g. --encoding latin-1"
            )
        if "invalid UTF8" in text or isinstance(exc, UnicodeDecodeError):
            return InputError(
                f"{self.path}: the file is not valid {self.encoding} ({text.splitlines()[0]}); "
                "pass its real encoding with --encoding, e.g. --encoding latin-1"
            )
        if "Expected" in text and "columns, got" in text:
            return InputError(
                f"{self.path}: a row has a different number of fields than the header: {text.splitlines()[0]}"
            )
        return InputError(f"{self.path} cannot be read as CSV: {text.splitlines()[0]}")

    # -- JSON Lines ----------------------------------------------------------
    def _json_chunks(self) -> Iterator[tuple[int, bytes]]:
        """(number of the first line, whole lines) of the file, `_JSON_CHUNK_BYTES` or one
        line at a time, whichever is larger."""
        line, pending_bytes = 1, 0
        pending: list[bytes] = []
        try:
            with self._stream() as stream:
                while block := stream.read(_JSON_CHUNK_BYTES):
                    cut = block.rfind(b"\n")
                    if cut < 0:
                        pending.append(block)
                        pending_bytes += len(block)
                        if pending_bytes > MAX_JSON_LINE_BYTES:
                            raise InputError(
                                f"{self.path}: line {line} is longer than {MAX_JSON_LINE_BYTES >> 20} MB, "
                                "the most grok-batch reads in one line (a request holds at most 25 MB)"
                            )
                        continue
                    chunk = b"".join([*pending, block[: cut + 1]])
                    pending, pending_bytes = [block[cut + 1 :]], len(block) - cut - 1
                    if not chunk.isspace():
                        yield line, chunk
                    line += chunk.count(b"\n")
        except (OSError, pa.ArrowInvalid) as exc:
            how = f"{self.compression}-compressed JSON Lines" if self.compression else "a file"
            raise InputError(f"{self.path} cannot be read as {how}: {str(exc).splitlines()[0]}") from None
        rest = b"".join(pending)
        if rest and not rest.isspace():
            yield line, rest

    def _read_json(self, line: int, chunk: bytes, schema: pa.Schema | None = None) -> pa.Table:
        parse = pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="error" if schema is not None else "infer"
        )
        try:
            return pajson.read_json(
                pa.BufferReader(chunk),
                read_options=pajson.ReadOptions(block_size=len(chunk) + 1),  # one block: whole lines
                parse_options=parse,
            )
        except pa.ArrowInvalid as exc:
            raise self._explain_json(str(exc), line) from None

    def _scan_json(self) -> _Scan:
        """Every line parsed once: the column types all lines agree on, and the row count."""
        unified: pa.Schema | None = None
        rows = 0
        for line, chunk in self._json_chunks():
            table = self._read_json(line, chunk)
            rows += table.num_rows
            schema = pa.schema([f.with_type(_json_type(f.type)) for f in table.schema])
            if unified is None:
                unified = schema
                continue
            try:
                unified = pa.unify_schemas([unified, schema], promote_options="permissive")
            except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
                raise self._explain_merge(str(exc), line) from None
        if unified is None or rows == 0:
            raise InputError(f"{self.path} holds no JSON object (JSON Lines: one object a line)")
        # A column that is null in every line has no type of its own: it reads as text.
        return _Scan(
            pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in unified]),
            rows,
        )

    def _json_batches(self, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for line, chunk in self._json_chunks():
            for batch in self._read_json(line, chunk, schema).to_batches(max_chunksize=batch_rows):
                if batch.num_rows:
                    yield batch

    def _explain_json(self, text: str, line: int) -> InputError:
        text = text.removeprefix("JSON parse error: ")
        changed = _JSON_CHANGED.search(text)
        if changed:
            path, was, now, row = changed.groups()
            near = line + int(row)
            if not path:
                return InputError(
                    f"{self.path}: near line {near} is not a JSON object ({now}); JSON Lines hold one "
                    "object {...} a line"
                )
            return InputError(
                f"{self.path}: column {_json_name(path)!r} holds {was} values and, near line {near}, "
                f'{now}; every line must give a column the same kind of value (text in quotes, e.g. "7")'
            )
        if "unexpected field" in text:
            return InputError(f"{self.path}: near line {line}: a column the file did not have before")
        return InputError(f"{self.path}: near line {line}: not valid JSON Lines ({text.splitlines()[0]})")

    def _explain_merge(self, text: str, line: int) -> InputError:
        merge = _JSON_MERGE.search(text)
        if merge is None:
            return InputError(f"{self.path}: the lines from {line} on do not fit those before: {text}")
        name, before, after = merge.groups()
        return InputError(
            f"{self.path}: column {name!r} holds {before} values before line {line} and {after} values "
            'from there on; every line must give a column the same kind of value (text in quotes, e.g. "7")'
        )

    # -- Excel ---------------------------------------------------------------
    def _sheet_rows(self, sheet: str | None) -> Iterator[tuple[str, int, tuple[Any, ...]]]:
        """(sheet title, row number, the row's values) of every row of the sheet, streamed."""
        self._check_workbook()
        import openpyxl  # only when a workbook is read: its import takes a while

        handle: IO[bytes] = self.path.open("rb")  # a handle: openpyxl judges a name by its extension
        try:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # style and extension notes about the file
                    workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
            except Exception as exc:  # an untrusted zip of XML: any failure is the file's
                raise InputError(f"{self.path} is not a readable Excel workbook (.xlsx): {exc}") from None
            try:
                worksheet = self._worksheet(workbook, sheet)
                worksheet.reset_dimensions()  # read every row, whatever size the file claims
                title = str(worksheet.title)
                number = 0
                yield title, 0, ()  # the title, also for a sheet with no rows at all
                try:
                    for number, row in enumerate(worksheet.iter_rows(values_only=True), start=1):
                        yield title, number, row
                except InputError:
                    raise
                except Exception as exc:
                    raise InputError(
                        f"{self.path}, sheet {title!r}: cannot be read after row {number}: {exc}"
                    ) from None
            finally:
                workbook.close()
        finally:
            handle.close()

    def _check_workbook(self) -> None:
        try:
            with zipfile.ZipFile(self.path) as archive:
                text_bytes = sum(
                    i.file_size for i in archive.infolist() if i.filename.endswith("sharedStrings.xml")
                )
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{self.path} is not a readable Excel workbook (.xlsx): {exc}") from None
        if text_bytes > MAX_XLSX_SHARED_STRINGS_BYTES:
            raise InputError(
                f"{self.path}: its text takes {text_bytes >> 20:,} MB unpacked, more than the "
                f"{MAX_XLSX_SHARED_STRINGS_BYTES >> 20:,} MB grok-batch reads from a workbook; save the "
                "sheet as CSV and run that"
            )

    def _worksheet(self, workbook: Any, sheet: str | None) -> Any:
        if sheet is None:
            if not workbook.worksheets:
                raise InputError(f"{self.path} has no worksheet")
            return workbook.worksheets[0]
        if sheet not in workbook.sheetnames:
            names = ", ".join(repr(name) for name in workbook.sheetnames)
            raise InputError(f"{self.path} has no sheet {sheet!r}; its sheets: {names}")
        worksheet = workbook[sheet]
        if not hasattr(worksheet, "iter_rows"):
            raise InputError(f"{self.path}: sheet {sheet!r} is a chart, not a table")
        return worksheet

    def _sheet_table(self, sheet: str | None) -> Iterator[tuple[str, list[str], int, list[tuple[Any, ...]]]]:
        """(title, header names, number of the block's first row, data rows cut to the header's
        width) of the sheet, in blocks; empty rows are skipped like a CSV's empty lines."""
        header: list[str] | None = None
        block: list[tuple[Any, ...]] = []
        title, first = "", 0
        for title, number, row in self._sheet_rows(sheet):
            if not any(_filled(v) for v in row):
                continue
            if header is None:
                header = _header(row, f"{self.path}, sheet {title!r}", number)
                continue
            width = len(header)
            extra = next((i for i in range(width, len(row)) if _filled(row[i])), None)
            if extra is not None:
                raise InputError(
                    f"{self.path}, sheet {title!r}: row {number} has a value in column {_letter(extra)}, "
                    f"right of the header's last column ({_letter(width - 1)}); name that column in the "
                    "header or clear the cell"
                )
            if not block:
                first = number
            block.append(row[:width] if len(row) >= width else row + (None,) * (width - len(row)))
            if len(block) >= 8192:
                yield title, header, first, block
                block = []
        if header is None:
            raise InputError(f"{self.path}, sheet {title!r} is empty: no header row")
        yield title, header, first, block

    def _scan_sheet(self) -> _Scan:
        """Every row read once: each column's kind of value, and the row count."""
        kinds: list[_Kind] = []
        header: list[str] = []
        rows, title = 0, ""
        for named, header, _, block in self._sheet_table(self.sheet):
            title = named
            if not kinds:
                kinds = [_Kind() for _ in header]
            for kind, values in zip(kinds, zip(*block, strict=True), strict=False):
                kind.see(values)
            rows += len(block)
        if rows == 0:
            raise InputError(f"{self.path}, sheet {title!r} has a header but no data rows")
        fields = [pa.field(name, kind.arrow_type()) for name, kind in zip(header, kinds, strict=True)]
        return _Scan(pa.schema(fields, metadata={SHEET_METADATA: title.encode("utf-8")}), rows)

    def _sheet_batches(self, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        named = (schema.metadata or {}).get(SHEET_METADATA)
        sheet = named.decode("utf-8") if named is not None else self.sheet  # the run's sheet first
        plain = pa.schema(list(schema))  # the batches carry no file metadata
        for title, header, first, block in self._sheet_table(sheet):
            if header != schema.names:
                raise InputError(
                    f"{self.path}, sheet {title!r}: its header ({', '.join(header)}) is not the one the run "
                    f"read ({', '.join(schema.names)})"
                )
            for start in range(0, len(block), batch_rows):
                rows = block[start : start + batch_rows]
                columns = zip(*rows, strict=True)
                arrays = [
                    _sheet_column(values, field, f"{self.path}, sheet {title!r}", first + start)
                    for values, field in zip(columns, schema, strict=True)
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=plain)


# -- JSON Lines helpers -------------------------------------------------------
def _normal_encoding(encoding: str) -> str:
    lowered = encoding.lower().replace("_", "-")
    return "utf-8" if lowered in ("utf-8", "utf8") else lowered


def _json_type(kind: pa.DataType) -> pa.DataType:
    """Arrow's JSON reader turns strings that look like dates into timestamps; grok-batch
    keeps them as the text they are (inside nested values too)."""
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct(
            [child.with_type(_json_type(child.type)) for child in map(kind.field, range(kind.num_fields))]
        )
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_json_type(kind.value_type)))
    return kind


def _json_name(path: str) -> str:
    """Arrow's JSON pointer of a column (/meta/author) as a name (meta.author)."""
    return path.lstrip("/").replace("/", ".")


# -- Excel helpers ------------------------------------------------------------
def _filled(value: Any) -> bool:
    return value is not None and value != ""


def _letter(index: int) -> str:
    """The Excel column letter of a 0-based column index (0 -> A, 26 -> AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _header(row: tuple[Any, ...], where: str, number: int) -> list[str]:
    values = list(row)
    while values and not _filled(values[-1]):
        values.pop()
    names = []
    for index, value in enumerate(values):
        if not _filled(value):
            raise InputError(
                f"{where}: column {_letter(index)} has no name in the header (row {number}); name it or "
                "delete the column"
            )
        names.append(_cell_text(value))
    return names


def _cell_text(value: Any) -> str:
    """A cell as text, the way a plain CSV export shows it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


class _Kind:
    """The kind of value a sheet column holds, learned cell by cell: bool, int, float, date,
    or text as soon as two kinds meet (int and float make float)."""

    def __init__(self) -> None:
        self.kind = "empty"
        self.midnight = True  # every date is at 00:00
        self.whole_seconds = True  # no date has microseconds

    def see(self, values: tuple[Any, ...]) -> None:
        for value in values:
            if self.kind == "text":
                return
            if not _filled(value):
                continue
            kind = _value_kind(value)
            if kind == "date":
                moment = value if isinstance(value, dt.datetime) else None
                if moment is not None:
                    self.midnight = self.midnight and moment.time() == dt.time()
                    self.whole_seconds = self.whole_seconds and moment.microsecond == 0
            if self.kind in ("empty", kind):
                self.kind = kind
            elif {self.kind, kind} == {"int", "float"}:
                self.kind = "float"
            else:
                self.kind = "text"

    def arrow_type(self) -> pa.DataType:
        if self.kind == "date":
            if self.midnight:
                return pa.date32()
            return pa.timestamp("s" if self.whole_seconds else "us")
        return {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}.get(self.kind, pa.string())


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "float"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.date):  # a datetime too
        return "date"
    return "text"


def _sheet_column(values: tuple[Any, ...], field: pa.Field, where: str, first_row: int) -> pa.Array:
    """One column of a block of sheet rows in the field's type: text for a text column (an
    empty cell ""), the cells' own values for a typed one (an empty cell null)."""
    kind = field.type
    if pa.types.is_string(kind):
        return pa.array([_cell_text(v) if _filled(v) else "" for v in values], pa.string())
    cells = [v if _filled(v) else None for v in values]
    if pa.types.is_date32(kind):
        cells = [v.date() if isinstance(v, dt.datetime) else v for v in cells]
    elif pa.types.is_timestamp(kind):
        cells = [_as_datetime(v) for v in cells]
    try:
        return pa.array(cells, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise InputError(
            f"{where}: column {field.name!r} (in the rows from {first_row} on) no longer holds {kind} "
            f"values: {exc}"
        ) from None


def _as_datetime(value: Any) -> Any:
    """A date cell in a column of date-times: its midnight."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    return value
