"""xAI's REST Batch protocol over HTTP (reference §8): /files (multipart upload, list,
get, delete, content), /batches (create, list, get, :cancel, results, requests) and
/chat/completions. Served under /v1 unless EmulatorConfig.protocol is "openai".
"""

from __future__ import annotations

import json
import re
from typing import Any

from emulator.replies import FILE_ROUTE, RawJson, Reply, Routes, json_object, read_upload
from emulator.xai_state import XaiBatch, XaiBatches

_BATCH_ROUTE = re.compile(r"^/v1/batches/(?P<id>[^/:]+)(?P<rest>:cancel|/results|/requests)?$")


def _page_params(query: dict[str, list[str]]) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", ["100"])[0])
        offset = int(query.get("pagination_token", ["0"])[0] or "0")
    except ValueError:
        raise Reply(400, "limit and pagination_token must be integers") from None
    if not 1 <= limit <= 1000:
        raise Reply(400, "limit must be between 1 and 1000")
    return limit, offset


class XaiRoutes(Routes[XaiBatches]):
    flavor = "xai"
    missing_code = "invalid_request"

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> tuple[int, Any]:
        store, xai = self.store, self.batches
        if path == "/v1/files" and method == "POST":
            filename, purpose, content = read_upload(content_type, body, store.config.max_file_bytes)
            return 200, store.add_file(filename, purpose, content).as_json()
        if path == "/v1/files" and method == "GET":
            with store.lock:
                files = [f.as_json() for f in store.files.values()]
            return 200, {"data": files, "pagination_token": None}
        if match := FILE_ROUTE.match(path):
            return self._file_route(method, match["id"], match["rest"])
        if path == "/v1/batches" and method == "POST":
            return 200, self._create_batch(body)
        if path == "/v1/batches" and method == "GET":
            limit, offset = _page_params(query)
            with store.lock:
                ids = xai.order[offset : offset + limit]
                batches = [xai.batch_json(xai.batches[i]) for i in ids]
                more = offset + limit < len(xai.order)
            return 200, {"batches": batches, "pagination_token": str(offset + limit) if more else None}
        if match := _BATCH_ROUTE.match(path):
            batch = xai.batches.get(match["id"])
            if batch is None:
                raise Reply(404, f"batch {match['id']} not found", "not_found")
            return self._batch_route(method, batch, match["rest"], query)
        if path == "/v1/chat/completions" and method == "POST":
            return 200, self._chat_completion(body)
        raise Reply(404, f"no route {method} {path}", "not_found")

    def _file_missing(self, file_id: str, param: str) -> Reply:
        return Reply(404, f"file {file_id} not found", "not_found")

    def _create_batch(self, body: bytes) -> dict[str, Any]:
        request = json_object(body)
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise Reply(400, "name is required")
        file_id = request.get("input_file_id")
        if file_id is not None and file_id not in self.store.files:
            raise self._file_missing(file_id, "input_file_id")
        return self.batches.batch_json(self.batches.create(name, file_id))

    def _batch_route(
        self, method: str, batch: XaiBatch, rest: str | None, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        xai = self.batches
        if method == "GET" and rest is None:
            return 200, xai.batch_json(batch)
        if method == "POST" and rest == ":cancel":
            xai.cancel(batch)
            return 200, xai.batch_json(batch)
        if method == "GET" and rest == "/results":
            limit, offset = _page_params(query)
            results, next_offset = xai.results_page(batch, offset, limit)
            # A short page means the frontier of finished requests: the last page.
            token = self.store.config.last_page_token if len(results) < limit else str(next_offset)
            page = '{"results":[' + ",".join(results) + '],"pagination_token":' + json.dumps(token) + "}"
            return 200, RawJson(page)
        if method == "GET" and rest == "/requests":
            limit, offset = _page_params(query)
            items = xai.request_states(batch)[offset : offset + limit]
            more = offset + limit < len(batch.custom_ids)
            return 200, {
                "batch_request_metadata": items,
                "pagination_token": str(offset + limit) if more else None,
            }
        if method == "POST" and rest == "/requests":
            if batch.input_file_id is not None:
                raise Reply(400, "File-based batches are sealed; requests cannot be added.")
            raise Reply(400, "Adding requests is not emulated; use the JSONL file flow.")
        raise Reply(405, f"{method} not allowed here")
