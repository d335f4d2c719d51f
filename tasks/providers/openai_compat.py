"""The OpenAI Batch protocol, spoken by OpenAI and many OpenAI-compatible servers.

Unlike xAI: a `status` field, `request_counts`, results in an output file and an error
file, `/cancel`, and `metadata`, which carries our batch name so a batch whose create
reply was lost can be found again. Traps handled (reference §7): `completed` with every
row in the error file and no output file, `expired` batches that still hold paid
results, an empty-string `error_file_id`, and `finalizing` that lasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

import openai
import orjson

from tasks.infra.errors import ProviderError
from tasks.infra.records import CANCELLED, EXPIRED, FAILED
from tasks.providers.base import BatchState, BatchStatus, Capabilities
from tasks.providers.completion import completion_fields, error_text
from tasks.providers.sdk import SdkProvider, status_text
from tasks.spec.endpoints import ENDPOINTS

NAME_KEY = "grok_batch_name"  # metadata key holding our deterministic batch name
ENDPOINT: Final = "/v1/chat/completions"
PAGE_RECORDS = 1000
_MAX_LIST_PAGES = 50  # newest first: a batch we just created is on the first pages
_STATES = {
    "validating": BatchState.VALIDATING,
    "in_progress": BatchState.RUNNING,
    "finalizing": BatchState.RUNNING,  # may last long; results are not final yet
    "cancelling": BatchState.RUNNING,  # partial output appears once cancelled
    "completed": BatchState.DONE,
    "failed": BatchState.REJECTED,  # the input file failed validation
    "expired": BatchState.EXPIRED,  # finished rows are still in the output file
    "cancelled": BatchState.CANCELLED,
}
_RETRYABLE_HTTP = {408, 409, 429}
_ERRORS_SHOWN = 5
_ERROR_OUTCOMES = {"batch_expired": (EXPIRED, True), "batch_cancelled": (CANCELLED, False)}


def batch_status_from_openai(data: dict[str, Any]) -> BatchStatus:
    status = str(data.get("status") or "")
    if status not in _STATES:
        raise ProviderError(f"batch {data.get('id')} has a status this client does not know: {status!r}")
    counts = data.get("request_counts") or {}
    total = int(counts.get("total") or 0)
    succeeded, failed = int(counts.get("completed") or 0), int(counts.get("failed") or 0)
    errors = (data.get("errors") or {}).get("data") or []
    message = "; ".join(
        f"line {e.get('line')}: {e.get('message')}" if e.get("line") else str(e.get("message"))
        for e in errors[:_ERRORS_SHOWN]
    )
    if len(errors) > _ERRORS_SHOWN:  # one per bad line: the first few say enough
        message += f"; and {len(errors) - _ERRORS_SHOWN} more"
    return BatchStatus(
        batch_id=str(data.get("id") or ""),
        state=_STATES[status],
        total=total,
        pending=max(0, total - succeeded - failed)
        if status not in ("completed", "expired", "cancelled")
        else 0,
        succeeded=succeeded,
        failed=failed,
        message=message or None,
    )


def normalize_line(item: dict[str, Any]) -> dict[str, Any]:
    """One line of an output or error file -> one record of records.RESULT_SCHEMA."""
    custom_id = item.get("custom_id")
    error, response = item.get("error"), item.get("response") or {}
    if error:
        message, code = error_text(error)
        status, retryable = _ERROR_OUTCOMES.get(str(code), (FAILED, False))
        return {"custom_id": custom_id, "status": status, "error": message, "retryable": retryable}
    body = response.get("body") or {}
    status_code = int(response.get("status_code") or 0)
    if status_code != 200 or not isinstance(body, dict) or "choices" not in body:
        message = error_text(body.get("error") or body)[0] if isinstance(body, dict) else str(body)
        return {
            "custom_id": custom_id,
            "status": FAILED,
            "error": f"HTTP {status_code}: {message}",
            "retryable": status_code in _RETRYABLE_HTTP or status_code >= 500,
        }
    return {"custom_id": custom_id, **completion_fields(body, reasoning_in_completion=True)}


def jsonl_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a JSONL byte stream, split on LF only (a CR before it is dropped).
    JSON leaves U+2028, U+2029, U+0085 and the other Unicode line breaks unescaped inside
    strings, and `str.splitlines` and httpx's `iter_lines` split on them too, cutting a
    record in two. A line longer than a chunk is joined once, not copied per chunk."""
    parts: list[bytes] = []
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        if len(pieces) == 1:
            parts.append(chunk)
            continue
        parts.append(pieces[0])
        yield _without_cr(b"".join(parts))
        for piece in pieces[1:-1]:
            yield _without_cr(piece)
        parts = [pieces[-1]]
    tail = b"".join(parts)
    if tail:
        yield _without_cr(tail)


def _without_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class OpenAIBatchProvider(SdkProvider):
    """OpenAI's Batch API. Base URL from OPENAI_BASE_URL, key from OPENAI_API_KEY."""

    name = "openai"
    endpoint = ENDPOINTS["openai"]
    capabilities = Capabilities(
        batch_protocol="openai",
        sync_chat=True,
        find_by_name=True,
        deletes_files=True,
        expiry_is_final=True,
        reasoning_in_completion=True,
    )

    def create_batch(self, name: str, file_id: str) -> str:
        def post() -> str:
            batch = self.client.with_options(max_retries=0).batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={NAME_KEY: name},
            )
            return str(batch.id)

        return self.create_once(name, post)

    def find_batch(self, name: str) -> str | None:
        """The newest batch whose metadata carries this name (lists newest first)."""
        page = self._call("listing batches", lambda: self.client.batches.list(limit=100))
        for _ in range(_MAX_LIST_PAGES):
            for batch in page.data:
                if (batch.metadata or {}).get(NAME_KEY) == name:
                    return str(batch.id)
            if not page.has_next_page():
                return None
            page = self._call("listing batches", page.get_next_page)
        return None

    def _batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch object, or None when the service no longer knows it (HTTP 404)."""
        batch = self._call(
            f"reading batch {batch_id}",
            lambda: self.client.batches.retrieve(batch_id),
            if_missing=lambda: None,
        )
        return None if batch is None else dict(batch.model_dump())

    def _list_one_batch(self) -> None:
        self.client.batches.list(limit=1)

    def get_status(self, batch_id: str) -> BatchStatus:
        data = self._batch(batch_id)
        return self.gone(batch_id) if data is None else batch_status_from_openai(data)

    def iter_results(self, batch_id: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of normalized records from the output file, then the error file. Read
        whatever the batch holds: an expired or cancelled batch still has paid results
        (one the service no longer knows has none to read)."""
        data = self._batch(batch_id) or {}
        for key in ("output_file_id", "error_file_id"):
            file_id = data.get(key)
            if file_id:  # None, or "" on some servers when there were no errors
                yield from self._file_pages(file_id)

    def result_files(self, batch_id: str) -> list[str]:
        """The batch's output and error files (either may be missing, or "" on some servers)."""
        data = self._batch(batch_id) or {}
        return [str(data[key]) for key in ("output_file_id", "error_file_id") if data.get(key)]

    def _file_pages(self, file_id: str) -> Iterator[list[dict[str, Any]]]:
        page: list[dict[str, Any]] = []
        try:
            with self.client.with_streaming_response.files.content(file_id) as response:
                for line in jsonl_lines(response.iter_bytes()):
                    if not line.strip():
                        continue
                    page.append(normalize_line(orjson.loads(line)))
                    if len(page) >= PAGE_RECORDS:
                        yield page
                        page = []
        except openai.APIStatusError as exc:
            raise ProviderError(
                f"reading file {file_id} failed: HTTP {exc.status_code}: {status_text(exc)}"
            ) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(
                f"reading file {file_id} failed: cannot reach {self.base_url} ({exc})"
            ) from None
        except orjson.JSONDecodeError as exc:
            raise ProviderError(f"file {file_id} holds a line that is not JSON: {exc}") from None
        if page:
            yield page

    def cancel(self, batch_id: str) -> None:
        """Cancel a batch; one the service no longer knows (404) has nothing left to cancel."""
        self._call(
            f"cancelling batch {batch_id}",
            lambda: self.client.batches.cancel(batch_id),
            if_missing=lambda: None,
        )
