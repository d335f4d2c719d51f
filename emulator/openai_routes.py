"""OpenAI's Batch protocol over HTTP: /files, /batches (+ /cancel) and /chat/completions.

Served under /openai/v1 always, and under /v1 when EmulatorConfig.protocol is
"openai", so the real openai SDK (with OPENAI_BASE_URL pointed here) can drive
the same files and clock as the xAI routes. Paths reach here as "/v1/...".
"""

from __future__ import annotations

import re
from typing import Any

from emulator.openai_state import OPENAI_ENDPOINTS, CannotCancelError, OpenAIBatch, OpenAIBatches
from emulator.replies import FILE_ROUTE, Reply, Routes, json_object, read_upload

_BATCH_ROUTE = re.compile(r"^/v1/batches/(?P<id>[^/:]+)(?P<rest>/cancel)?$")
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_MAX_METADATA_KEYS = 16


def _limit(query: dict[str, list[str]], default: int, top: int) -> int:
    try:
        limit = int(query.get("limit", [str(default)])[0])
    except ValueError:
        raise Reply(400, "limit must be an integer", param="limit") from None
    if not 1 <= limit <= top:
        raise Reply(400, f"limit must be between 1 and {top}", param="limit")
    return limit


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > _MAX_METADATA_KEYS
        or not all(isinstance(k, str) and len(k) <= 64 for k in value)
        or not all(isinstance(v, str) and len(v) <= 512 for v in value.values())
    ):
        raise Reply(
            400, "metadata must map at most 16 keys (≤64 chars) to strings (≤512 chars)", param="metadata"
        )
    return dict(value)


class OpenAIRoutes(Routes[OpenAIBatches]):
    flavor = "openai"
    missing_code = "missing_required_parameter"

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> tuple[int, Any]:
        openai = self.batches
        if path == "/v1/files" and method == "POST":
            return 200, self._upload(content_type, body)
        if path == "/v1/files" and method == "GET":
            return 200, self._list_files(query)
        if match := FILE_ROUTE.match(path):
            return self._file_route(method, match["id"], match["rest"])
        if path == "/v1/batches" and method == "POST":
            return 200, self._create_batch(body)
        if path == "/v1/batches" and method == "GET":
            after = query.get("after", [None])[0]
            data, more = openai.page(_limit(query, 20, 100), after)
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            return 200, {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}
        if match := _BATCH_ROUTE.match(path):
            batch = openai.batches.get(match["id"])
            if batch is None:
                raise Reply(404, f"No batch found with id '{match['id']}'.", None, "batch_id")
            return self._batch_route(method, batch, match["rest"])
        if path == "/v1/chat/completions" and method == "POST":
            return 200, self._chat_completion(body)
        raise Reply(404, f"no route {method} {path}", "not_found")

    def _upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        store = self.store
        filename, purpose, content = read_upload(content_type, body, store.config.max_file_bytes)
        if purpose is None:
            raise Reply(
                400, "Missing required parameter: 'purpose'.", "missing_required_parameter", "purpose"
            )
        if purpose not in FILE_PURPOSES:
            raise Reply(400, f"Invalid value for 'purpose': {purpose!r}.", "invalid_value", "purpose")
        return store.add_file(filename, purpose, content).as_json("openai")

    def _list_files(self, query: dict[str, list[str]]) -> dict[str, Any]:
        purpose = query.get("purpose", [None])[0]
        with self.store.lock:
            files = [f.as_json("openai") for f in self.store.files.values()]
        files = [f for f in files if purpose in (None, f["purpose"])]
        if query.get("order", ["desc"])[0] == "desc":
            files.reverse()
        first, last = (files[0]["id"], files[-1]["id"]) if files else (None, None)
        return {"object": "list", "data": files, "first_id": first, "last_id": last, "has_more": False}

    def _file_missing(self, file_id: str, param: str) -> Reply:
        return Reply(404, f"No such File object: {file_id}", None, param)

    def _create_batch(self, body: bytes) -> dict[str, Any]:
        request = json_object(body)
        file_id = request.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise Reply(400, "Missing required parameter: 'input_file_id'.", "missing_required_parameter")
        endpoint = request.get("endpoint")
        if endpoint not in OPENAI_ENDPOINTS:
            raise Reply(400, f"Invalid value for 'endpoint': {endpoint!r}.", "invalid_value", "endpoint")
        window = request.get("completion_window")
        if window != "24h":
            message = f"Invalid value for 'completion_window': {window!r}; only '24h' is supported."
            raise Reply(400, message, "invalid_value", "completion_window")
        metadata = _metadata(request.get("metadata"))
        record = self.store.files.get(file_id)
        if record is None:
            raise self._file_missing(file_id, "input_file_id")
        if record.purpose not in (None, "batch"):
            message = f"File {file_id} has purpose {record.purpose!r}; batch input files need 'batch'."
            raise Reply(400, message, "invalid_value", "input_file_id")
        return self.batches.as_json(self.batches.create(file_id, endpoint, window, metadata))

    def _batch_route(self, method: str, batch: OpenAIBatch, rest: str | None) -> tuple[int, Any]:
        openai = self.batches
        if method == "GET" and rest is None:
            return 200, openai.as_json(batch)
        if method == "POST" and rest == "/cancel":
            try:
                openai.cancel(batch)
            except CannotCancelError as exc:
                # OpenAI's status here is unverified; 400 as compatible gateways answer (the SDK
                # would retry a 409 twice before giving up).
                raise Reply(400, str(exc), None) from None
            return 200, openai.as_json(batch)
        raise Reply(405, f"{method} not allowed here")
