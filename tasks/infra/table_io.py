"""Streaming reads of the input table (CSV, Parquet) as Arrow record batches.

A CSV's cells are text exactly as written: no type is guessed (a guess turns the id "007" into
7 and the zip "01234" into 1234), and an empty cell is the empty string "", never null. A
Parquet file's columns keep the types the file stores. A CSV row larger than the block Arrow
parses at a time is read again with a larger block, up to `MAX_CSV_ROW_BYTES`.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.infra.errors import InputError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_CSV_BLOCK_BYTES = 8 << 20  # parsed at a time; doubled (up to the next limit) for a larger row
MAX_CSV_ROW_BYTES = 256 << 20  # a larger CSV row refuses the file (a request holds 25 MB at most)
_CSV_TEXT_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error to \w+: invalid UTF8")
_ROW_OVER_BLOCK = "straddling object straddles two block boundaries"


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
class TableSource:
    """Where the input lives and how to read it."""

    path: Path
    encoding: str = "utf-8"

    @property
    def format(self) -> str:
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise InputError(
                f"{self.path}: unsupported format {self.path.suffix or '(no extension)'!r}; "
                "use a .csv or .parquet file"
            )
        return fmt

    def check_readable(self) -> None:
        if not self.path.exists():
            raise InputError(f"input file {self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"input {self.path} is not a file")
        _ = self.format
        try:
            with self.path.open("rb") as handle:
                first = handle.read(1)
        except OSError as exc:
            raise InputError(f"input file {self.path} cannot be read: {exc.strerror}") from None
        if not first:
            raise InputError(f"input file {self.path} is empty")

    def schema(self) -> pa.Schema:
        """The table's columns: a Parquet file's own types, text for every CSV column.
        Refuses a table whose column names repeat."""
        self.check_readable()
        if self.format == "parquet":
            schema = self._parquet().schema_arrow
        else:
            schema = pa.schema([pa.field(name, pa.string()) for name in self._csv_header()])
        repeated = {name: n for name, n in Counter(schema.names).items() if n > 1}
        if repeated:
            names = ", ".join(f"column name {name!r} appears {n} times" for name, n in repeated.items())
            raise InputError(f"{self.path}: {names}; every column needs its own name (rename the repeats)")
        return schema

    def row_count(self) -> int | None:
        """The number of data rows where the file states it (Parquet), else None (CSV)."""
        return self._parquet().metadata.num_rows if self.format == "parquet" else None

    def batches(self, schema: pa.Schema | None = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Record batches of the table. `schema`: the CSV column types to read (those a run
        saved when it prepared); every column is text without it."""
        if self.format == "parquet":
            # pre_buffer=False: pre-buffering keeps whole row groups' bytes around, doubling the
            # peak memory on a file of many large row groups (bench/: 1.0 GB -> 0.5 GB at 10M rows).
            yield from pq.ParquetFile(self.path, pre_buffer=False).iter_batches(batch_size=batch_rows)
            return
        if schema is None:
            schema = self.schema()
        yield from self._csv_batches(schema)

    # -- reading -------------------------------------------------------------
    def _parquet(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{self.path} is not a readable Parquet file: {exc}") from None

    def _open_csv(self, column_types: dict[str, pa.DataType], block_size: int) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            self.path,
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
            except (pa.ArrowInvalid, UnicodeDecodeError, LookupError) as exc:
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
            except (pa.ArrowInvalid, UnicodeDecodeError, LookupError) as exc:
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
