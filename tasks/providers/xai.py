"""xAI's REST Batch protocol (reference: shared/reference/xai-batch-api.md).

Files go up with the openai SDK; batches use xAI's own routes through the SDK's raw
request methods (the SDK's `batches.*` speak OpenAI's protocol, which xAI does not).
The SDK retries 408/409/429/5xx and dropped connections with backoff that honours
Retry-After; batch creation is the exception, see `create_batch`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import openai
import orjson

from tasks.errors import ProviderError
from tasks.providers.base import BatchState, BatchStatus
from tasks.records import CANCELLED, FAILED, SUCCEEDED
from tasks.secrets import resolve_api_key

DEFAULT_BASE_URL = "https://api.x.ai/v1"
RESULTS_PAGE_LIMIT = 1000
_MAX_PAGES = 1_000_000  # a bound on pagination loops that a misbehaving server cannot exceed
GRPC_CANCELLED = 1
# google.rpc codes that fail the same way when sent again: invalid argument, not found,
# permission denied, failed precondition, out of range, unimplemented, unauthenticated.
_FINAL_GRPC_CODES = {3, 5, 7, 9, 11, 12, 16}


# -- pure mapping of xAI's shapes ------------------------------------------------------
def parse_service_time(value: Any) -> datetime | None:
    """RFC 3339 or a bare date (REST docs show `2025-11-12`); a bare date counts to its end."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value).replace(tzinfo=UTC) + timedelta(days=1)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def batch_status_from_json(data: dict[str, Any], now: datetime | None = None) -> BatchStatus:
    """xAI has no status field: derive one from counters, cancel fields and expiry."""
    counters = data.get("state") or {}
    total = int(counters.get("num_requests") or 0)
    pending = int(counters.get("num_pending") or 0)
    message = data.get("cancel_by_xai_message") or None
    expires = parse_service_time(data.get("expire_time"))
    expired = expires is not None and (now or datetime.now(UTC)) >= expires
    if data.get("cancel_time") and message and total == 0:
        state = BatchState.REJECTED  # file failed validation: counters stay 0
    elif data.get("cancel_time"):
        state = BatchState.CANCELLED
    elif total == 0:
        state = BatchState.EXPIRED if expired else BatchState.VALIDATING  # 0 while parsing
    elif pending > 0:
        state = BatchState.EXPIRED if expired else BatchState.RUNNING
    else:
        state = BatchState.DONE
    return BatchStatus(
        batch_id=str(data.get("batch_id") or data.get("id") or ""),
        state=state,
        total=total,
        pending=pending,
        succeeded=int(counters.get("num_success") or 0),
        failed=int(counters.get("num_error") or 0),
        cancelled=int(counters.get("num_cancelled") or 0),
        message=message,
    )


def _error_text(error: Any) -> tuple[str, int | None]:
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") or error.get("error") or str(error)
        return str(message), code if isinstance(code, int) else None
    return str(error), None


def normalize_result(item: dict[str, Any]) -> dict[str, Any]:
    """One xAI result entry -> one record of records.RESULT_SCHEMA (batch_id left empty)."""
    custom_id = item.get("batch_request_id") or item.get("custom_id")
    outcome = item.get("batch_result") or {}
    response = outcome.get("response") or {}
    completion = response.get("chat_get_completion")
    if completion is None and response:
        completion = next(iter(response.values()))  # e.g. requests sent to /v1/responses
    error = outcome.get("error") or item.get("error_message") or item.get("error")
    record: dict[str, Any] = {"custom_id": custom_id, "status": SUCCEEDED, "retryable": False}
    if isinstance(error, dict) and error.get("code") == 0 and completion is not None:
        error = None  # google.rpc.Status with code 0 means OK
    if error or not isinstance(completion, dict):
        message, code = _error_text(error or "the result holds neither a response nor an error")
        record["status"] = CANCELLED if code == GRPC_CANCELLED else FAILED
        record["error"] = message
        record["retryable"] = code not in _FINAL_GRPC_CODES and code != GRPC_CANCELLED
        return record
    choice = (completion.get("choices") or [{}])[0]
    message_body = choice.get("message") or {}
    content = message_body.get("content")
    if content is None and message_body.get("tool_calls"):
        content = json.dumps(message_body["tool_calls"], ensure_ascii=False)
    usage = completion.get("usage") or {}
    ticks = usage.get("cost_in_usd_ticks")
    record.update(
        response=content,
        finish_reason=choice.get("finish_reason"),
        model=completion.get("model"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),  # xAI: excludes reasoning tokens
        reasoning_tokens=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens"),
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
        cost_usd=ticks / 1e10 if isinstance(ticks, int | float) else None,
    )
    return record


# -- the client --------------------------------------------------------------------------
class _CreateThrottle:
    """xAI allows 2 batch creations per second per team; stay under it in this process."""

    def __init__(self, interval_s: float = 0.55) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last = 0.0

    def wait(self) -> None:
        with self._lock:
            delay = self._last + self.interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._last = time.monotonic()


_CREATE_THROTTLE = _CreateThrottle()


class XaiProvider:
    """The xAI Batch API over REST. Base URL from XAI_BASE_URL, key from XAI_API_KEY."""

    name = "xai"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        max_retries: int = 8,
        timeout_s: float = 120.0,
        create_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = (base_url or os.environ.get("XAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or resolve_api_key("XAI_API_KEY", "xai-api-key"),
            max_retries=max_retries,
            timeout=timeout_s,
        )
        self._create_attempts = create_attempts
        self._sleep = sleep

    def _call(self, what: str, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except openai.APIStatusError as exc:
            raise ProviderError(f"{what} failed: HTTP {exc.status_code}: {_status_text(exc)}") from None
        except openai.APIConnectionError as exc:
            raise ProviderError(f"{what} failed: cannot reach {self.base_url} ({exc})") from None

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        # Bytes + orjson: result pages are large, and the SDK's json decoding costs ~4x more.
        return orjson.loads(self._client.get(path, cast_to=bytes, options={"params": params}))

    def upload(self, shard_path: Path) -> str:
        with shard_path.open("rb") as handle:
            created = self._call(
                f"uploading {shard_path.name}",
                lambda: self._client.files.create(file=(shard_path.name, handle), purpose="batch"),
            )
        return str(created.id)

    def create_batch(self, name: str, file_id: str) -> str:
        """Create once: a lost reply may hide a created batch, so look it up by name
        before every retry instead of letting the SDK resend the POST."""
        last_error = ""
        for attempt in range(self._create_attempts):
            _CREATE_THROTTLE.wait()
            try:
                data: Any = self._client.post(
                    "/batches",
                    cast_to=object,
                    body={"name": name, "input_file_id": file_id},
                    options={"max_retries": 0},
                )
                return str(data["batch_id"])
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                last_error = _status_text(exc) if isinstance(exc, openai.APIStatusError) else str(exc)
                self._sleep(_retry_delay(exc, attempt))  # first: give a lagging listing time to show it
                found = self.find_batch(name)
                if found is not None:
                    return found
            except openai.APIStatusError as exc:
                raise ProviderError(
                    f"creating batch {name} failed: HTTP {exc.status_code}: {_status_text(exc)}"
                ) from None
        raise ProviderError(f"creating batch {name} failed after {self._create_attempts} tries: {last_error}")

    def find_batch(self, name: str) -> str | None:
        """The newest batch with this name, by listing batches (GET /v1/batches)."""
        found: str | None = None
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params: dict[str, Any] = {"limit": 100}
            if token:
                params["pagination_token"] = token
            page = self._call("listing batches", partial(self._get, "/batches", params))
            batches = page.get("batches") or []
            for batch in batches:
                if batch.get("name") == name:
                    found = str(batch.get("batch_id"))
            next_token = page.get("pagination_token")
            if not batches or not next_token or next_token == token:
                return found
            token = next_token
        return found

    def get_status(self, batch_id: str) -> BatchStatus:
        data = self._call(
            f"reading batch {batch_id}",
            lambda: self._client.get(f"/batches/{batch_id}", cast_to=object),
        )
        return batch_status_from_json(data)

    def iter_results(self, batch_id: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of normalized records, following pagination_token until null, "" or missing."""
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params: dict[str, Any] = {"limit": RESULTS_PAGE_LIMIT}
            if token:
                params["pagination_token"] = token
            page = self._call(
                f"reading results of {batch_id}", partial(self._get, f"/batches/{batch_id}/results", params)
            )
            results = page.get("results") or []
            if results:
                yield [normalize_result(item) for item in results]
            next_token = page.get("pagination_token")
            if not results or not next_token or next_token == token:
                return
            token = next_token

    def delete_file(self, file_id: str) -> None:
        """Uploaded request files are billed per GiB-day; drop each once its batch is collected."""
        self._call(f"deleting file {file_id}", lambda: self._client.files.delete(file_id))

    def cancel(self, batch_id: str) -> None:
        self._call(
            f"cancelling batch {batch_id}",
            lambda: self._client.post(f"/batches/{batch_id}:cancel", cast_to=object),
        )


def _status_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        return _error_text(error)[0]
    return str(body or exc.message)


def _retry_delay(exc: Exception, attempt: int) -> float:
    if isinstance(exc, openai.APIStatusError):
        header = exc.response.headers.get("retry-after")
        try:
            if header is not None and 0 <= float(header) <= 120:
                return float(header)
        except ValueError:
            pass
    return float(min(0.5 * 2**attempt, 8.0))
