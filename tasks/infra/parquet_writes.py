"""Parquet written on a thread while the next table is made: the stages that write many
tables in a row (collect, the join) overlap encoding with their own work."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq


class WriteBehind:
    """Writes each table on a thread while the next one is made (collect: decoded; join: read
    and joined): Parquet encoding and compression release the GIL, so the two overlap on a
    second core. One write at a time, in order; a failed write raises at the next write or
    at exit, which waits for the last write (close the writer only after it)."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self._writer = writer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-write")
        self._pending: Future[None] | None = None

    def write(self, table: pa.Table) -> None:
        self._wait()
        self._pending = self._pool.submit(self._writer.write_table, table)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()  # the writer is closed only after its last write
        finally:
            self._pool.shutdown(wait=True)
