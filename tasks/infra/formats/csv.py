"""CSV: the header and the rows as text, streamed in blocks that grow for a row larger than
one; and Arrow's errors explained to the user."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from tasks.infra.errors import InputError
from tasks.infra.formats import Source, open_stream

_CSV_BLOCK_BYTES = 8 << 20  # parsed at a time; doubled (up to the next limit) for a larger row
MAX_CSV_ROW_BYTES = 256 << 20  # a larger CSV row refuses the file (a request holds 25 MB at most)
_CSV_TEXT_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error to \w+: invalid UTF8")
_ROW_OVER_BLOCK = "straddling object straddles two block boundaries"


def _open_csv(
    source: Source, column_types: dict[str, pa.DataType], block_size: int
) -> pacsv.CSVStreamingReader:
    data: str | pa.NativeFile = str(source.path) if source.compression is None else open_stream(source)
    return pacsv.open_csv(
        data,
        read_options=pacsv.ReadOptions(encoding=source.encoding, block_size=block_size),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        # strings_can_be_null=False (the default): an empty cell is "", never null
        convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False),
    )


def header(source: Source) -> list[str]:
    """The CSV's column names, as Arrow parses the header."""
    block_size = _CSV_BLOCK_BYTES
    while True:
        try:
            return list(_open_csv(source, {}, block_size).schema.names)
        except (pa.ArrowInvalid, UnicodeDecodeError, LookupError, OSError) as exc:
            block_size = _larger_block(source, exc, block_size, [])


def batches(source: Source, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The CSV's rows in `schema`'s types. A row larger than the parsing block is read
    again with a larger block, skipping the rows already given."""
    column_types = {f.name: f.type for f in schema}
    block_size, given = _CSV_BLOCK_BYTES, 0
    while True:
        skip = given
        try:
            for batch in _open_csv(source, column_types, block_size):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch, skip = batch.slice(skip), 0
                given += batch.num_rows
                yield batch
            return
        except (pa.ArrowInvalid, UnicodeDecodeError, LookupError, OSError) as exc:
            block_size = _larger_block(source, exc, block_size, schema.names)


def _larger_block(source: Source, exc: Exception, block_size: int, names: list[str]) -> int:
    """The block size to read again with when `exc` is a row larger than the block; any
    other error (or a row past the limit) is explained to the user."""
    if _ROW_OVER_BLOCK not in str(exc):
        raise _explain(source, exc, names) from None
    if block_size >= MAX_CSV_ROW_BYTES:
        raise InputError(
            f"{source.shown}: a row is larger than {MAX_CSV_ROW_BYTES >> 20} MB, the most grok-batch "
            "reads in one CSV row (a request holds at most 25 MB); shorten that row, or check for "
            "a quote that is never closed"
        ) from None
    return min(block_size * 2, MAX_CSV_ROW_BYTES)


def _explain(source: Source, exc: Exception, names: list[str]) -> InputError:
    text = str(exc)
    if isinstance(exc, LookupError):
        return InputError(f"{source.shown}: unknown encoding {source.encoding!r} (see --encoding)")
    if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowInvalid):
        return InputError(
            f"{source.shown} cannot be read as {source.compression}-compressed CSV: {text.splitlines()[0]}"
            if source.compression
            else f"input file {source.shown} cannot be read: {text.splitlines()[0]}"
        )
    if "Empty CSV file" in text:
        return InputError(f"input file {source.shown} is empty")
    column = _CSV_TEXT_ERROR.search(text)
    if column and int(column.group(1)) < len(names):
        return InputError(
            f"{source.shown}: column(s) {names[int(column.group(1))]!r} are not valid {source.encoding}; "
            "pass the file's real encoding with --encoding, e.g. --encoding latin-1"
        )
    if "invalid UTF8" in text or isinstance(exc, UnicodeDecodeError):
        return InputError(
            f"{source.shown}: the file is not valid {source.encoding} ({text.splitlines()[0]}); "
            "pass its real encoding with --encoding, e.g. --encoding latin-1"
        )
    if "Expected" in text and "columns, got" in text:
        return InputError(
            f"{source.shown}: a row has a different number of fields than the header: {text.splitlines()[0]}"
        )
    return InputError(f"{source.shown} cannot be read as CSV: {text.splitlines()[0]}")
