"""JSON Lines: whole lines read a chunk at a time, a first pass for the types every line
agrees on, then the rows in those types; and Arrow's errors explained to the user."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.json as pajson

from tasks.infra.errors import InputError
from tasks.infra.formats import Scan, Source, open_stream
from tasks.infra.formats.csv import MAX_CSV_ROW_BYTES

MAX_JSON_LINE_BYTES = MAX_CSV_ROW_BYTES  # the same for one line of JSON Lines
_JSON_CHANGED = re.compile(r"Column\(([^)]*)\) changed from (\w+) to (\w+) in row (\d+)")
_JSON_MERGE = re.compile(r"Field (.+?) has incompatible types: (.+?) vs (.+?)(?:\n|$)")


def _json_chunks(source: Source, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, whole lines) of the file, `chunk_bytes` or one
    line at a time, whichever is larger."""
    line, pending_bytes = 1, 0
    pending: list[bytes] = []
    try:
        with open_stream(source) as stream:
            while block := stream.read(chunk_bytes):
                cut = block.rfind(b"\n")
                if cut < 0:
                    pending.append(block)
                    pending_bytes += len(block)
                    if pending_bytes > MAX_JSON_LINE_BYTES:
                        raise InputError(
                            f"{source.shown}: line {line} is longer than {MAX_JSON_LINE_BYTES >> 20} MB, "
                            "the most grok-batch reads in one line (a request holds at most 25 MB)"
                        )
                    continue
                chunk = b"".join([*pending, block[: cut + 1]])
                pending, pending_bytes = [block[cut + 1 :]], len(block) - cut - 1
                if not chunk.isspace():
                    yield line, chunk
                line += chunk.count(b"\n")
    except (OSError, pa.ArrowInvalid) as exc:
        how = f"{source.compression}-compressed JSON Lines" if source.compression else "a file"
        raise InputError(f"{source.shown} cannot be read as {how}: {str(exc).splitlines()[0]}") from None
    rest = b"".join(pending)
    if rest and not rest.isspace():
        yield line, rest


def _read_json(source: Source, line: int, chunk: bytes, schema: pa.Schema | None = None) -> pa.Table:
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
        raise _explain_json(source, str(exc), line) from None


def scan(source: Source, chunk_bytes: int) -> Scan:
    """Every line parsed once: the column types all lines agree on, and the row count."""
    unified: pa.Schema | None = None
    rows = 0
    for line, chunk in _json_chunks(source, chunk_bytes):
        table = _read_json(source, line, chunk)
        rows += table.num_rows
        schema = pa.schema([f.with_type(_json_type(f.type)) for f in table.schema])
        if unified is None:
            unified = schema
            continue
        try:
            unified = pa.unify_schemas([unified, schema], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
            raise _explain_merge(source, str(exc), line) from None
    if unified is None or rows == 0:
        raise InputError(f"{source.shown} holds no JSON object (JSON Lines: one object a line)")
    # A column that is null in every line has no type of its own: it reads as text.
    return Scan(
        pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in unified]),
        rows,
    )


def batches(source: Source, schema: pa.Schema, batch_rows: int, chunk_bytes: int) -> Iterator[pa.RecordBatch]:
    for line, chunk in _json_chunks(source, chunk_bytes):
        for batch in _read_json(source, line, chunk, schema).to_batches(max_chunksize=batch_rows):
            if batch.num_rows:
                yield batch


def _explain_json(source: Source, text: str, line: int) -> InputError:
    text = text.removeprefix("JSON parse error: ")
    changed = _JSON_CHANGED.search(text)
    if changed:
        path, was, now, row = changed.groups()
        near = line + int(row)
        if not path:
            return InputError(
                f"{source.shown}: near line {near} is not a JSON object ({now}); JSON Lines hold one "
                "object {...} a line"
            )
        return InputError(
            f"{source.shown}: column {_json_name(path)!r} holds {was} values and, near line {near}, "
            f'{now}; every line must give a column the same kind of value (text in quotes, e.g. "7")'
        )
    if "unexpected field" in text:
        return InputError(f"{source.shown}: near line {line}: a column the file did not have before")
    return InputError(f"{source.shown}: near line {line}: not valid JSON Lines ({text.splitlines()[0]})")


def _explain_merge(source: Source, text: str, line: int) -> InputError:
    merge = _JSON_MERGE.search(text)
    if merge is None:
        return InputError(f"{source.shown}: the lines from {line} on do not fit those before: {text}")
    name, before, after = merge.groups()
    return InputError(
        f"{source.shown}: column {name!r} holds {before} values before line {line} and {after} values "
        'from there on; every line must give a column the same kind of value (text in quotes, e.g. "7")'
    )


def normal_encoding(encoding: str) -> str:
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
