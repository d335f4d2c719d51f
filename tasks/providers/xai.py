"""xAI's REST Batch protocol (reference: shared/reference/xai-batch-api.md).

Files go up with the openai SDK; batches use xAI's own routes through the SDK's raw
request methods (the SDK's `batches.*` speak OpenAI's protocol, which xAI does not).
The SDK retries 408/409/429/5xx and dropped connections with backoff that honours
Retry-After; batch creation is the exception (providers.sdk.create_once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.infra.records import CANCELLED, FAILED, SUCCEEDED
from tasks.money.pricing import ticks_to_usd
from tasks.providers.base import BatchState, BatchStatus, Capabilities
from tasks.providers.completion import RECORD_SCHEMA, completion_fields, error_text, records_table
from tasks.providers.sdk import SdkProvider
from tasks.spec.endpoints import ENDPOINTS

RESULTS_PAGE_LIMIT = 1000
_MAX_PAGES = 1_000_000  # a bound on pagination loops that a misbehaving server cannot exceed
GRPC_CANCELLED = 1
# google.rpc codes that fail the same way when sent again: invalid argument, not found,
# permission denied, failed precondition, out of range, unimplemented, unauthenticated.
_FINAL_GRPC_CODES = {3, 5, 7, 9, 11, 12, 16}


# -- pure mapping of xAI's shapes ------------------------------------------------------
def parse_service_time(value: Any) -> datetime | None:
    """RFC 3339 or a bare date (the REST docs show `"expire_time": "2025-11-12"`).

    The reference does not say which moment of its day a bare date names, so it counts as
    that day's 00:00 UTC: the earliest reading. An expiry judged too early only cancels the
    requests still pending (unfinished, so not billed; finished results are kept) and sends
    them again; one judged too late (the day's end) could wait past the moment the service
    stops serving the batch's results, which are then lost although paid for."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)  # 00:00 of that day
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
    # The proto and REST reference say expire_time, the current guide expires_at: either.
    expires = parse_service_time(data.get("expire_time") or data.get("expires_at"))
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


def normalize_result(item: dict[str, Any]) -> dict[str, Any]:
    """One xAI result entry -> one record of records.RESULT_SCHEMA (batch_id left empty)."""
    custom_id = item.get("batch_request_id") or item.get("custom_id")
    outcome = item.get("batch_result") or {}
    response = outcome.get("response") or {}
    completion = response.get("chat_get_completion")
    if completion is None and response:
        completion = next(iter(response.values()))  # e.g. requests sent to /v1/responses
    error = outcome.get("error") or item.get("error_message") or item.get("error")
    if isinstance(error, dict) and error.get("code") == 0 and completion is not None:
        error = None  # google.rpc.Status with code 0 means OK
    if error or not isinstance(completion, dict):
        message, code = error_text(error or "the result holds neither a response nor an error")
        return {
            "custom_id": custom_id,
            "status": CANCELLED if code == GRPC_CANCELLED else FAILED,
            "error": message,
            "retryable": code not in _FINAL_GRPC_CODES and code != GRPC_CANCELLED,
        }
    return {"custom_id": custom_id, **completion_fields(completion, reasoning_in_completion=False)}


_EXACT_TICKS = 2**53  # up to here a tick count is exact as a float64: ticks / 1e10 rounds as int / int does


class ResultColumns:
    """Normalized records of result entries (one or more pages), built column by column.

    An entry in the usual success shape (only `batch_request_id` and a `batch_result` holding
    only `response.chat_get_completion`, with a text answer and integer usage counts) is read
    straight into column lists, ~0.6 us a row; any other entry (an error in any of its shapes,
    a missing or null field, a float count, tool calls, another endpoint's key) goes through
    normalize_result, so both give the same record. Rows keep the entries' order."""

    def __init__(self) -> None:
        self.rows = 0  # entries added since the last table()
        self._clear()

    def _clear(self) -> None:
        self._ids: list[str] = []
        self._answers: list[str] = []
        self._finish: list[Any] = []
        self._models: list[Any] = []
        self._counts: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self._ticks: list[int | None] = []
        self._odd_at: list[int] = []  # positions (since the last table()) of entries read by normalize_result
        self._odd: list[dict[str, Any]] = []

    def add(self, items: list[Any]) -> None:
        ids, answers = self._ids.append, self._answers.append
        finish, models = self._finish.append, self._models.append
        prompt, output, cached, reasoning = (counts.append for counts in self._counts)
        ticks = self._ticks.append
        base = self.rows
        for at, item in enumerate(items):
            try:
                outcome = item["batch_result"]
                custom_id = item["batch_request_id"]
                completion = outcome["response"]["chat_get_completion"]
                choice = completion["choices"][0]
                answer = choice["message"]["content"]
                usage = completion["usage"]
                prompt_n = usage["prompt_tokens"]
                output_n = usage["completion_tokens"]
                cached_n = usage["prompt_tokens_details"]["cached_tokens"]
                reasoning_n = usage["completion_tokens_details"]["reasoning_tokens"]
                tick = usage.get("cost_in_usd_ticks")
            except (KeyError, TypeError, IndexError, AttributeError):
                tick = False  # not the usual shape: read below
            if (
                tick is not False
                and len(item) == 2  # no error_message or error beside the result
                and len(outcome) == 1  # no error beside the response
                and type(custom_id) is str
                and custom_id
                and type(answer) is str
                and type(prompt_n) is int
                and type(output_n) is int
                and type(cached_n) is int
                and type(reasoning_n) is int
                and (tick is None or type(tick) is int)
            ):
                ids(custom_id)
                answers(answer)
                finish(choice.get("finish_reason"))
                models(completion.get("model"))
                prompt(prompt_n)
                output(output_n)
                cached(cached_n)
                reasoning(reasoning_n)
                ticks(tick)
            else:
                record = normalize_result(item)
                if not isinstance(record.get("custom_id"), str):
                    record["custom_id"] = None  # matches no request
                self._odd_at.append(base + at)
                self._odd.append(record)
        self.rows += len(items)

    def table(self) -> pa.Table:
        """The records added since the last call, as a completion.RECORD_SCHEMA table."""
        n = len(self._ids)
        prompt, output, cached, reasoning = (_counts(c) for c in self._counts)
        columns = {
            "custom_id": pa.array(self._ids, pa.string()),
            "status": pa.repeat(pa.scalar(SUCCEEDED), n),
            "response": pa.array(self._answers, pa.string()),
            "finish_reason": _strings(self._finish),
            "model": _strings(self._models),
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "reasoning_tokens": reasoning,
            "cached_tokens": cached,
            "service_cost_usd": _usd(self._ticks),
            "error": pa.nulls(n, pa.string()),
            "retryable": pa.repeat(pa.scalar(False), n),
        }
        table = pa.table([columns[f.name] for f in RECORD_SCHEMA], schema=RECORD_SCHEMA)
        if self._odd:
            plain_at = np.ones(self.rows, dtype=bool)
            plain_at[self._odd_at] = False
            order = np.empty(self.rows, dtype=np.int64)  # row of the concatenation for each entry
            order[plain_at] = np.arange(n)
            order[self._odd_at] = np.arange(n, self.rows)
            table = pa.concat_tables([table, records_table(self._odd)]).take(pa.array(order))
        self.rows = 0
        self._clear()
        return table


def _strings(values: list[Any]) -> pa.Array:
    """A string column; one value repeated (a model, finish_reason "stop") is not converted
    row by row."""
    if values and type(values[0]) is str and values.count(values[0]) == len(values):
        return pa.repeat(pa.scalar(values[0], pa.string()), len(values))
    return pa.array(values, pa.string())


def _counts(values: list[int]) -> pa.Array:
    """A token count column from ints: negative reads 0, as Usage does."""
    if values and values.count(values[0]) == len(values):  # often all 0 (cached, reasoning)
        return pa.repeat(pa.scalar(max(values[0], 0), pa.int64()), len(values))
    return pa.array(np.maximum(np.array(values, dtype=np.int64), 0))


def _usd(ticks: list[int | None]) -> pa.Array:
    """service_cost_usd from integer ticks (or None), as ticks_to_usd gives it."""
    try:
        values = np.array(ticks, dtype=np.int64)  # TypeError for a None, OverflowError past int64
    except (TypeError, OverflowError):
        values = None
    if values is not None and len(values) and int(np.abs(values).max()) <= _EXACT_TICKS:
        return pa.array(values / 10_000_000_000)
    return pa.array([ticks_to_usd(t) for t in ticks], pa.float64())


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


class XaiProvider(SdkProvider):
    """The xAI Batch API over REST. Base URL from XAI_BASE_URL, key from XAI_API_KEY."""

    name = "xai"
    endpoint = ENDPOINTS["xai"]
    capabilities = Capabilities(
        batch_protocol="xai",
        sync_chat=True,
        find_by_name=True,
        deletes_files=True,
        expiry_is_final=False,
        reasoning_in_completion=False,
    )

    def create_batch(self, name: str, file_id: str) -> str:
        def post() -> str:
            data: Any = self.client.post(
                "/batches",
                cast_to=object,
                body={"name": name, "input_file_id": file_id},
                options={"max_retries": 0},
            )
            return str(data["batch_id"])

        return self.create_once(name, post, _CREATE_THROTTLE.wait)

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

    def _list_one_batch(self) -> None:
        self._get("/batches", {"limit": 1})

    def get_status(self, batch_id: str) -> BatchStatus:
        data = self._call(
            f"reading batch {batch_id}",
            lambda: self.client.get(f"/batches/{batch_id}", cast_to=object),
            if_missing=lambda: None,
        )
        return self.gone(batch_id) if data is None else batch_status_from_json(data)

    def _result_items(self, batch_id: str) -> Iterator[list[Any]]:
        """Pages of result entries, following pagination_token until null, "" or missing."""
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params: dict[str, Any] = {"limit": RESULTS_PAGE_LIMIT}
            if token:
                params["pagination_token"] = token
            page = self._call(
                f"reading results of {batch_id}",
                partial(self._get, f"/batches/{batch_id}/results", params),
                if_missing=None if token else dict,  # a batch the service no longer knows: no results
            )
            results = page.get("results") or []
            if results:
                yield results
            next_token = page.get("pagination_token")
            if not results or not next_token or next_token == token:
                return
            token = next_token

    def iter_results(self, batch_id: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of normalized records."""
        for items in self._result_items(batch_id):
            yield [normalize_result(item) for item in items]

    def iter_result_tables(self, batch_id: str, group_rows: int = 16_384) -> Iterator[pa.Table]:
        """The records iter_results gives, as completion.RECORD_SCHEMA tables of a page or a
        few (at least `group_rows` rows each but the last), built column by column."""
        columns = ResultColumns()
        for items in self._result_items(batch_id):
            columns.add(items)
            if columns.rows >= group_rows:
                yield columns.table()
        if columns.rows:
            yield columns.table()

    def cancel(self, batch_id: str) -> None:
        """Cancel a batch; one the service no longer knows (404) has nothing left to cancel."""
        self._call(
            f"cancelling batch {batch_id}",
            lambda: self.client.post(f"/batches/{batch_id}:cancel", cast_to=object),
            if_missing=lambda: None,
        )
