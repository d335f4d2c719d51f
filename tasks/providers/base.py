"""The one provider contract: what a batch protocol must do, and what it declares it can.

Every provider subclasses `BatchProvider`; the registry returns one; callers ask its
`capabilities`, never its concrete type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tasks.infra.errors import GrokBatchError
from tasks.lifecycle import BatchState

if TYPE_CHECKING:
    import openai
    import pyarrow as pa


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


@dataclass(frozen=True)
class Capabilities:
    """What a provider declares about itself; drivers decide by these, not by class."""

    batch_protocol: str  # "xai" or "openai": the shape of the batch endpoints
    sync_chat: bool  # /chat/completions for mode sync
    find_by_name: bool  # a batch is found by its name after a lost create reply (create-once)
    deletes_files: bool  # the run's files (uploads, result files) can and should be deleted once collected
    expiry_is_final: bool  # True: the service ends expired batches itself; False: our clock judges
    reasoning_in_completion: bool  # usage.completion_tokens includes reasoning tokens


class BatchProvider(ABC):
    """Upload a shard, create/find/poll/cancel a batch, page its normalized results."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    base_url: str  # the server that answers (part of what makes an answer reusable)

    @abstractmethod
    def upload(self, shard_path: Path) -> str: ...

    @abstractmethod
    def create_batch(self, name: str, file_id: str) -> str:
        """Create the batch exactly once, even when a reply is lost (see `find_batch`)."""

    @abstractmethod
    def find_batch(self, name: str) -> str | None:
        """The id of a batch created under `name`, if the service has one."""

    @abstractmethod
    def get_status(self, batch_id: str) -> BatchStatus: ...

    @abstractmethod
    def iter_results(self, batch_id: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of normalized records (providers.completion), in the service's order."""

    def iter_result_tables(self, batch_id: str) -> Iterator[pa.Table]:
        """The same records as Arrow tables (RECORD_SCHEMA); a provider that can read its pages
        column by column overrides this (xAI), the others give their pages converted."""
        from tasks.providers.completion import records_table

        for page in self.iter_results(batch_id):
            yield records_table(page)

    @abstractmethod
    def cancel(self, batch_id: str) -> None: ...

    @abstractmethod
    def delete_file(self, file_id: str) -> None: ...

    def result_files(self, batch_id: str) -> list[str]:
        """Files the service wrote a batch's results to, stored (and billed) until deleted:
        none where results are read from an endpoint (xAI)."""
        return []

    def sync_client(self, timeout_s: float) -> openai.OpenAI:
        """An SDK client for /chat/completions with no retries of its own (mode sync paces
        and retries itself); only providers whose capabilities say `sync_chat`."""
        raise GrokBatchError(f"provider {self.name} cannot answer synchronously (mode sync)")
