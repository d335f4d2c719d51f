"""Request shards on disk: the writer both prepare (round 1) and reconcile (follow-up
rounds) use to cut request lines into files within the service's line and byte limits."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import numpy as np
import pyarrow as pa

from tasks.infra.run_layout import RunPaths, ShardInfo


class TooManyShardsError(Exception):
    """The lines would need more shards than the writer may open."""

    def __init__(self, lines: int) -> None:
        super().__init__(f"{lines} lines need more shards than allowed")
        self.lines = lines  # lines given so far, counting the first that found no shard


class ShardWriter:
    """Appends request lines to shards, rolling over at the line and byte limits.

    The disk writes happen on one background thread (file writes release the GIL), so
    rendering the next record batch overlaps with writing this one; at most
    `_MAX_PENDING` writes wait, which bounds the memory they hold. With `max_shards`, a
    line that would open one shard more raises `TooManyShardsError` before that file is created.
    """

    _MAX_PENDING = 8

    def __init__(
        self, paths: RunPaths, round_no: int, max_lines: int, max_bytes: int, *, max_shards: int | None = None
    ) -> None:
        self.paths, self.round_no = paths, round_no
        self.max_lines, self.max_bytes, self.max_shards = max_lines, max_bytes, max_shards
        self._written = 0  # lines in the shards before the current one
        self.shards: list[ShardInfo] = []
        self._handle: IO[bytes] | None = None
        self._lines = self._bytes = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: deque[Future[object]] = deque()

    def _submit(self, call: Callable[..., object], *args: object) -> None:
        while len(self._pending) >= self._MAX_PENDING:
            self._pending.popleft().result()
        self._pending.append(self._io.submit(call, *args))

    def _roll(self) -> None:
        if self.max_shards is not None and len(self.shards) >= self.max_shards:
            raise TooManyShardsError(self._written + self._lines + 1)
        self._close_current()
        shard_no = len(self.shards)
        path = self.paths.shard(self.round_no, shard_no)
        self._handle = path.open("wb")
        self.shards.append(ShardInfo(self.round_no, shard_no, str(path), 0, 0))
        self._lines = self._bytes = 0

    def _close_current(self) -> None:
        if self._handle is not None:
            self._submit(self._handle.close)  # after its pending writes: one ordered thread
            last = self.shards[-1]
            self.shards[-1] = ShardInfo(last.round_no, last.shard_no, last.path, self._lines, self._bytes)
            self._written += self._lines
            self._handle = None

    def write(self, lines: pa.Array) -> np.ndarray:
        """Write `lines` (no nulls); returns the shard number of each line."""
        lines = lines.cast(pa.string())
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[
            lines.offset : lines.offset + len(lines) + 1
        ]
        data = memoryview(lines.buffers()[2]) if lines.buffers()[2] is not None else memoryview(b"")
        shard_of = np.empty(len(lines), dtype=np.int32)
        start = 0
        while start < len(lines):
            if self._handle is None or self._lines >= self.max_lines:
                self._roll()
            room_bytes = self.max_bytes - self._bytes
            ends = offsets[start + 1 :] - offsets[start]
            fit = int(np.searchsorted(ends, room_bytes, side="right"))
            fit = min(fit, self.max_lines - self._lines, len(lines) - start)
            if fit == 0:
                if self._lines == 0:  # a single line larger than a shard: it goes alone
                    fit = 1
                else:
                    self._roll()
                    continue
            stop = start + fit
            assert self._handle is not None
            self._submit(self._handle.write, data[offsets[start] : offsets[stop]])  # view keeps buffer alive
            shard_of[start:stop] = len(self.shards) - 1
            self._lines += fit
            self._bytes += int(offsets[stop] - offsets[start])
            start = stop
        return shard_of

    def close(self) -> list[ShardInfo]:
        """Finish every write (raising the first error) and return the shards written."""
        try:
            self._close_current()
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._io.shutdown(wait=True)
        return self.shards
