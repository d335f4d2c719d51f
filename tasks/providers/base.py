"""The one small interface every batch protocol implements, and its normalized states."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol


class BatchState(StrEnum):
    """Where a batch stands, whatever the protocol calls it."""

    VALIDATING = "validating"  # uploaded, not yet parsed (xAI: every counter still 0)
    RUNNING = "running"
    DONE = "done"  # nothing pending; results are final
    REJECTED = "rejected"  # the service refused the file; its message says why
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # the deadline passed with requests still pending

    @property
    def terminal(self) -> bool:
        return self not in (BatchState.VALIDATING, BatchState.RUNNING)


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    state: BatchState
    total: int = 0
    pending: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    message: str | None = None  # the service's reason for a rejection


class BatchProvider(Protocol):
    """Upload a shard, create/find/poll/cancel a batch, and page its normalized results."""

    name: ClassVar[str]
    expiry_is_final: ClassVar[bool]  # the service ends expired batches itself (no cancel needed)

    def upload(self, shard_path: Path) -> str: ...

    def create_batch(self, name: str, file_id: str) -> str: ...

    def find_batch(self, name: str) -> str | None: ...

    def get_status(self, batch_id: str) -> BatchStatus: ...

    def iter_results(self, batch_id: str) -> Iterator[list[dict[str, Any]]]: ...

    def cancel(self, batch_id: str) -> None: ...

    def delete_file(self, file_id: str) -> None: ...
