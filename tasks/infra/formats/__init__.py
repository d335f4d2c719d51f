"""The readers of each input format, one module a format, behind `tasks.infra.table_io`'s
`TableSource`; here what they share: the source they read and what a first pass learns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa


class Source(Protocol):
    """What a reader needs of a `TableSource`: its file and how to read it."""

    @property
    def path(self) -> Path: ...

    @property
    def shown(self) -> str: ...

    @property
    def encoding(self) -> str: ...

    @property
    def sheet(self) -> str | None: ...

    @property
    def compression(self) -> str | None: ...


@dataclass(frozen=True)
class Scan:
    """What a first pass over a JSON Lines file or an Excel sheet learned."""

    schema: pa.Schema
    rows: int


def open_stream(source: Source) -> pa.NativeFile:
    """The file's bytes, decompressed where its name says it is compressed."""
    return pa.input_stream(str(source.path), compression=source.compression)
