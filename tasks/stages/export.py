"""Copies of the finished output that analysts open: NAME.csv and NAME.xlsx beside NAME.parquet
(the job's `output_formats`), streamed from the Parquet in record batches.

The Parquet is the output and is always written first; a copy that cannot hold the table is
refused or marked, with a note for the report and the log, never cut in silence:

- CSV (pyarrow's writer): every value as written in the Parquet; text quoted, a null an empty
  field (so "" and null stay apart); nested values (lists, structs) as JSON text.
- Excel (openpyxl, write-only): one sheet, the header then the rows. A table of more than
  `EXCEL_MAX_ROWS - 1` rows or `EXCEL_MAX_COLUMNS` columns is refused. A cell longer than
  `EXCEL_MAX_CELL_CHARS` is cut to fit and ends in a visible marker; control characters
  Excel cannot store are removed; a whole number of more than 15 digits (which Excel would
  round) is written as text; each is counted in a note. Text starting with "=" stays text
  (never a formula); a null is an empty cell; NaN and infinities are written as text.

An existing file is replaced only when the command may replace its output (`overwrite`),
and never when it is the run's input.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.infra.logs import LOGGER

EXCEL_MAX_ROWS = 1_048_576  # rows of a sheet, the header row included
EXCEL_MAX_COLUMNS = 16_384
EXCEL_MAX_CELL_CHARS = 32_767  # Excel counts UTF-16 code units
EXCEL_EXACT_DIGITS = 15  # Excel keeps 15 significant digits of a number
CUT_MARKER = "…[cut: Excel holds 32,767 characters a cell; the Parquet has all {chars:,}]"
_BATCH_ROWS = 8_192
# What openpyxl refuses in a cell (XML 1.0 cannot hold these control characters).
_EXCEL_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_EXCEL_ILLEGAL_PATTERN = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
_SHEET_TITLE_ILLEGAL = re.compile(r"[\[\]:*?/\\]")


def export_path(output: Path, fmt: str) -> Path:
    """reviews.parquet -> reviews.csv / reviews.xlsx"""
    return output.with_suffix(f".{fmt}")


def export_output(
    output: Path, formats: Sequence[str], *, overwrite: bool = False, keep: Iterable[Path] = ()
) -> list[str]:
    """Write each of `formats` (csv, xlsx) beside the finished Parquet `output`; returns the
    notes for the report (also logged): a copy refused, or cells it had to change. `keep`:
    files never replaced (the run's input). The Parquet stands whatever happens here."""
    kept = {path.resolve() for path in keep}
    notes: list[str] = []
    for fmt in dict.fromkeys(formats):
        target = export_path(output, fmt)
        if target.resolve() in kept:
            notes.append(f"{target.name} was not written: it is the run's input; name the output otherwise")
            continue
        if target.exists() and not overwrite:
            notes.append(f"{target.name} was not written: it already exists (pass --overwrite to replace it)")
            continue
        partial = target.with_name(target.name + ".partial")
        try:
            notes += _WRITERS[fmt](output, partial, target)
        except Exception as exc:  # a copy must never cost the run its Parquet or its report
            LOGGER.exception("writing %s failed", target)
            notes.append(f"{target.name} was not written: {type(exc).__name__}: {exc}")
        finally:
            partial.unlink(missing_ok=True)
    for note in notes:
        LOGGER.warning("%s", note)
    return notes


# -- CSV ---------------------------------------------------------------------
def _write_csv(output: Path, partial: Path, target: Path) -> list[str]:
    parquet = pq.ParquetFile(output)
    schema = pa.schema([pa.field(f.name, _csv_type(f.type)) for f in parquet.schema_arrow])
    with pacsv.CSVWriter(partial, schema) as writer:
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
            columns = [_csv_column(column) for column in batch.columns]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    partial.replace(target)
    return []


def _csv_type(kind: pa.DataType) -> pa.DataType:
    return pa.string() if _needs_text(kind) else kind


def _csv_column(column: pa.Array) -> pa.Array:
    return _as_text(column) if _needs_text(column.type) else column


def _needs_text(kind: pa.DataType) -> bool:
    """Values pyarrow's CSV writer cannot write as they are: nested ones and bytes."""
    value = kind.value_type if pa.types.is_dictionary(kind) else kind
    return pa.types.is_nested(value) or pa.types.is_binary(value) or pa.types.is_large_binary(value)


def _as_text(column: pa.Array) -> pa.Array:
    """Nested values as JSON text; bytes as UTF-8 text where they are, else 0x and hex."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return pa.array([None if v is None else _bytes_text(v) for v in column.to_pylist()], pa.string())
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()],
        pa.string(),
    )


def _bytes_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


# -- Excel -------------------------------------------------------------------
class _Changes:
    """Cells the Excel copy could not hold as they are, counted per kind and column."""

    def __init__(self) -> None:
        self.cut: Counter[str] = Counter()
        self.cleaned: Counter[str] = Counter()
        self.long_numbers: Counter[str] = Counter()

    def notes(self, target: Path, output: Path) -> list[str]:
        notes = []
        if self.cut:
            notes.append(
                f"{target.name}: {self.cut.total():,} cell(s) longer than Excel's {EXCEL_MAX_CELL_CHARS:,} "
                f'characters were cut to fit and end in "…[cut: …]" ({_by_column(self.cut)}); '
                f"{output.name} holds the full text"
            )
        if self.cleaned:
            notes.append(
                f"{target.name}: {self.cleaned.total():,} cell(s) held control characters Excel cannot "
                f"store, removed there ({_by_column(self.cleaned)}); {output.name} keeps them"
            )
        if self.long_numbers:
            notes.append(
                f"{target.name}: {self.long_numbers.total():,} whole number(s) of more than "
                f"{EXCEL_EXACT_DIGITS} digits are text there, which Excel would otherwise round "
                f"({_by_column(self.long_numbers)})"
            )
        return notes


def _by_column(counts: Counter[str]) -> str:
    return ", ".join(f"{name}: {count:,}" for name, count in counts.most_common())


def _write_xlsx(output: Path, partial: Path, target: Path) -> list[str]:
    parquet = pq.ParquetFile(output)
    names = parquet.schema_arrow.names
    rows = parquet.metadata.num_rows
    if rows + 1 > EXCEL_MAX_ROWS:
        return [
            f"{target.name} was not written: the table has {rows:,} rows and an Excel sheet holds "
            f"{EXCEL_MAX_ROWS - 1:,} below its header; {output.name} has every row "
            "(output_formats: [csv] gives a copy with no such limit)"
        ]
    if len(names) > EXCEL_MAX_COLUMNS:
        return [
            f"{target.name} was not written: the table has {len(names):,} columns and an Excel sheet "
            f"holds {EXCEL_MAX_COLUMNS:,}; {output.name} has every column"
        ]
    import openpyxl  # only when a workbook is written: its import takes a while
    from openpyxl.cell import WriteOnlyCell

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet(_sheet_title(output))
    changes = _Changes()

    def as_text_cell(value: str) -> Any:
        """Text that openpyxl would take for a formula ("=..."), kept as text."""
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"
        return cell

    header = _excel_values(pa.array(names, pa.string()), "(header)", changes, as_text_cell)
    sheet.append(header)
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
        columns = [
            _excel_values(column, name, changes, as_text_cell)
            for column, name in zip(batch.columns, names, strict=True)
        ]
        for row in zip(*columns, strict=True):
            sheet.append(row)
    workbook.save(partial)
    partial.replace(target)
    return changes.notes(target, output)


def _sheet_title(output: Path) -> str:
    """The output's name as a sheet title (at most 31 characters, none of []:*?/\\)."""
    title = _SHEET_TITLE_ILLEGAL.sub("-", output.stem)[:31].strip("'")
    return title or "results"


def _excel_values(
    column: pa.Array, name: str, changes: _Changes, as_text_cell: Callable[[str], Any]
) -> list[Any]:
    """One column of a batch as the values of its Excel cells (see the module)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if _needs_text(kind):
        column = _as_text(column)
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return _excel_texts(column, name, changes, as_text_cell)
    if pa.types.is_integer(kind):
        return _excel_integers(column, name, changes)
    if pa.types.is_floating(kind):
        return [_finite_or_text(v) for v in column.to_pylist()]
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
        if kind.unit == "ns":  # Excel keeps milliseconds at best; Python values hold microseconds
            micro = pa.timestamp("us", kind.tz) if pa.types.is_timestamp(kind) else pa.duration("us")
            column = pc.cast(column, micro, safe=False)
        if pa.types.is_timestamp(kind) and kind.tz is not None:  # Excel has no time zones
            return [None if v is None else v.isoformat(sep=" ") for v in column.to_pylist()]
    if pa.types.is_null(kind):
        return [None] * len(column)
    return column.to_pylist()


def _excel_texts(
    column: pa.Array, name: str, changes: _Changes, as_text_cell: Callable[[str], Any]
) -> list[Any]:
    values: list[Any] = column.to_pylist()
    # Only cells that need a change go through Python: long ones (an emoji is two UTF-16
    # units, so anything past half the limit is measured), control characters, formulas.
    suspect = pc.or_(
        pc.or_(
            pc.greater(pc.utf8_length(column), EXCEL_MAX_CELL_CHARS // 2),
            pc.match_substring_regex(column, _EXCEL_ILLEGAL_PATTERN),
        ),
        pc.starts_with(column, "="),
    )
    for index in pc.indices_nonzero(pc.fill_null(suspect, False)).to_pylist():
        text: str = values[index]
        if _EXCEL_ILLEGAL.search(text):
            text = _EXCEL_ILLEGAL.sub("", text)
            changes.cleaned[name] += 1
        if _utf16_units(text) > EXCEL_MAX_CELL_CHARS:
            text = _cut(text)
            changes.cut[name] += 1
        values[index] = as_text_cell(text) if len(text) > 1 and text.startswith("=") else text
    return values


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str) -> str:
    """`text` cut to Excel's cell limit, ending in the marker that says so."""
    marker = CUT_MARKER.format(chars=len(text))
    room = EXCEL_MAX_CELL_CHARS - _utf16_units(marker)
    kept = text[:room]
    excess = _utf16_units(kept) - room  # characters outside the BMP take two units each
    if excess > 0:
        kept = kept[: len(kept) - excess]
    return kept + marker


def _excel_integers(column: pa.Array, name: str, changes: _Changes) -> list[Any]:
    values: list[Any] = column.to_pylist()
    limit = 10**EXCEL_EXACT_DIGITS
    long = None  # 32-bit and smaller integers have at most 10 digits
    if column.type.bit_width >= 64:
        long = pc.greater_equal(column, pa.scalar(limit, column.type))
        if pa.types.is_signed_integer(column.type):
            long = pc.or_(long, pc.less_equal(column, pa.scalar(-limit, column.type)))
    if long is not None:
        for index in pc.indices_nonzero(pc.fill_null(long, False)).to_pylist():
            values[index] = str(values[index])
            changes.long_numbers[name] += 1
    return values


def _finite_or_text(value: float | None) -> float | str | None:
    """Excel stores no NaN or infinity: those are written as text."""
    if value is None or (value == value and value not in (float("inf"), float("-inf"))):
        return value
    return str(value)


_WRITERS: dict[str, Callable[[Path, Path, Path], list[str]]] = {"csv": _write_csv, "xlsx": _write_xlsx}
