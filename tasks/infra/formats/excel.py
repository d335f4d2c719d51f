"""Excel: a workbook's sheet read with openpyxl in read-only mode: the header, each column's
kind of value (a first pass), then the rows in blocks; and the checks on the workbook."""

from __future__ import annotations

import datetime as dt
import warnings
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa

from tasks.infra.errors import InputError
from tasks.infra.formats import Scan, Source

# An Excel workbook's text is held in memory while its sheet streams (openpyxl reads the
# shared strings whole); a larger one is refused, as is anything that is not a workbook.
MAX_XLSX_SHARED_STRINGS_BYTES = 1 << 30
SHEET_METADATA = b"grok_batch.sheet"  # in a workbook's schema: the sheet a run read


def _sheet_rows(source: Source, sheet: str | None) -> Iterator[tuple[str, int, tuple[Any, ...]]]:
    """(sheet title, row number, the row's values) of every row of the sheet, streamed."""
    _check_workbook(source)
    import openpyxl  # only when a workbook is read: its import takes a while

    handle: IO[bytes] = source.path.open("rb")  # a handle: openpyxl judges a name by its extension
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # style and extension notes about the file
                workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        except Exception as exc:  # an untrusted zip of XML: any failure is the file's
            raise InputError(f"{source.shown} is not a readable Excel workbook (.xlsx): {exc}") from None
        try:
            worksheet = _worksheet(source, workbook, sheet)
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
                    f"{source.shown}, sheet {title!r}: cannot be read after row {number}: {exc}"
                ) from None
        finally:
            workbook.close()
    finally:
        handle.close()


def _check_workbook(source: Source) -> None:
    try:
        with zipfile.ZipFile(source.path) as archive:
            text_bytes = sum(
                i.file_size for i in archive.infolist() if i.filename.endswith("sharedStrings.xml")
            )
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{source.shown} is not a readable Excel workbook (.xlsx): {exc}") from None
    if text_bytes > MAX_XLSX_SHARED_STRINGS_BYTES:
        raise InputError(
            f"{source.shown}: its text takes {text_bytes >> 20:,} MB unpacked, more than the "
            f"{MAX_XLSX_SHARED_STRINGS_BYTES >> 20:,} MB grok-batch reads from a workbook; save the "
            "sheet as CSV and run that"
        )


def _worksheet(source: Source, workbook: Any, sheet: str | None) -> Any:
    if sheet is None:
        if not workbook.worksheets:
            raise InputError(f"{source.shown} has no worksheet")
        return workbook.worksheets[0]
    if sheet not in workbook.sheetnames:
        names = ", ".join(repr(name) for name in workbook.sheetnames)
        raise InputError(f"{source.shown} has no sheet {sheet!r}; its sheets: {names}")
    worksheet = workbook[sheet]
    if not hasattr(worksheet, "iter_rows"):
        raise InputError(f"{source.shown}: sheet {sheet!r} is a chart, not a table")
    return worksheet


def _sheet_table(
    source: Source, sheet: str | None
) -> Iterator[tuple[str, list[str], int, list[tuple[Any, ...]]]]:
    """(title, header names, number of the block's first row, data rows cut to the header's
    width) of the sheet, in blocks; empty rows are skipped like a CSV's empty lines."""
    header: list[str] | None = None
    block: list[tuple[Any, ...]] = []
    title, first = "", 0
    for title, number, row in _sheet_rows(source, sheet):
        if not any(_filled(v) for v in row):
            continue
        if header is None:
            header = _header(row, f"{source.shown}, sheet {title!r}", number)
            continue
        width = len(header)
        extra = next((i for i in range(width, len(row)) if _filled(row[i])), None)
        if extra is not None:
            raise InputError(
                f"{source.shown}, sheet {title!r}: row {number} has a value in column {_letter(extra)}, "
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
        raise InputError(f"{source.shown}, sheet {title!r} is empty: no header row")
    yield title, header, first, block


def scan(source: Source) -> Scan:
    """Every row read once: each column's kind of value, and the row count."""
    kinds: list[_Kind] = []
    header: list[str] = []
    rows, title = 0, ""
    for named, header, _, block in _sheet_table(source, source.sheet):
        title = named
        if not kinds:
            kinds = [_Kind() for _ in header]
        for kind, values in zip(kinds, zip(*block, strict=True), strict=False):
            kind.see(values)
        rows += len(block)
    if rows == 0:
        raise InputError(f"{source.shown}, sheet {title!r} has a header but no data rows")
    fields = [pa.field(name, kind.arrow_type()) for name, kind in zip(header, kinds, strict=True)]
    return Scan(pa.schema(fields, metadata={SHEET_METADATA: title.encode("utf-8")}), rows)


def batches(source: Source, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    named = (schema.metadata or {}).get(SHEET_METADATA)
    sheet = named.decode("utf-8") if named is not None else source.sheet  # the run's sheet first
    plain = pa.schema(list(schema))  # the batches carry no file metadata
    for title, header, first, block in _sheet_table(source, sheet):
        if header != schema.names:
            raise InputError(
                f"{source.shown}, sheet {title!r}: its header ({', '.join(header)}) is not the one the run "
                f"read ({', '.join(schema.names)})"
            )
        for start in range(0, len(block), batch_rows):
            rows = block[start : start + batch_rows]
            columns = zip(*rows, strict=True)
            arrays = [
                _sheet_column(values, field, f"{source.shown}, sheet {title!r}", first + start)
                for values, field in zip(columns, schema, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=plain)


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
