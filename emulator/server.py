"""A real HTTP server on loopback that speaks xAI's REST Batch protocol (reference §8),
and OpenAI's Batch protocol under /openai/v1 (see openai_routes.py).

xAI routes: /v1/files (multipart upload, list, get, delete, content), /v1/batches
(create, list, get, :cancel, results, requests), /v1/chat/completions, plus
/_emulator/stats and /_emulator/config for tests and people poking at it. With
EmulatorConfig.protocol="openai" the plain /v1 routes speak OpenAI instead. Faults
(429, 500, drops, auth) apply to both protocols, each answering in its own shape.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.completions import chat_completion
from emulator.openai_routes import OpenAIRoutes
from emulator.replies import RawJson, Reply, error_body, json_object, read_upload
from emulator.state import BatchRecord, EmulatorConfig, NotAllowedError, ServiceState

_BATCH_ROUTE = re.compile(r"^/v1/batches/(?P<id>[^/:]+)(?P<rest>:cancel|/results|/requests)?$")
_FILE_ROUTE = re.compile(r"^/v1/files/(?P<id>[^/]+)(?P<rest>/content)?$")
OPENAI_PREFIX = "/openai"


def _protocol_and_route(path: str, config: EmulatorConfig) -> tuple[str, str]:
    """Which protocol answers `path`, and the path as that protocol's routes see it ("/v1/...")."""
    if path == f"{OPENAI_PREFIX}/v1" or path.startswith(f"{OPENAI_PREFIX}/v1/"):
        return "openai", path[len(OPENAI_PREFIX) :]
    return config.protocol, path


def _page_params(query: dict[str, list[str]]) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", ["100"])[0])
        offset = int(query.get("pagination_token", ["0"])[0] or "0")
    except ValueError:
        raise Reply(400, "limit and pagination_token must be integers") from None
    if not 1 <= limit <= 1000:
        raise Reply(400, "limit must be between 1 and 1000")
    return limit, offset


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # the request log lives in ServiceState, never with headers (keys)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -----------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_bytes(self, status: int, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        config = state.config
        url = urlsplit(self.path)
        path = url.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path.startswith("/_emulator/"):
            self._admin(method, path, body)
            return
        protocol, route = _protocol_and_route(path, config)
        if state.roll(config.drop_rate):
            state.log(method, path, 0)
            self.close_connection = True
            return
        if state.roll(config.rate_429):
            state.log(method, path, 429)
            limited = "rate_limited" if protocol == "xai" else "rate_limit_exceeded"
            self._send_json(
                429,
                error_body(protocol, 429, "Too many requests, slow down.", limited),
                {"Retry-After": f"{config.retry_after_s:g}"},
            )
            return
        if state.roll(config.rate_500):
            state.log(method, path, 500)
            internal = "internal" if protocol == "xai" else None
            self._send_json(500, error_body(protocol, 500, "Internal server error.", internal))
            return
        if config.api_key is not None and self.headers.get("Authorization") != f"Bearer {config.api_key}":
            state.log(method, path, 401)
            refused = "unauthenticated" if protocol == "xai" else "invalid_api_key"
            self._send_json(401, error_body(protocol, 401, "Incorrect API key.", refused))
            return
        try:
            if protocol == "openai":
                content_type = self.headers.get("Content-Type", "")
                status, payload = self.server.openai_routes.handle(
                    method, route, parse_qs(url.query), body, content_type
                )
            else:
                status, payload = self._route(method, route, parse_qs(url.query), body)
        except Reply as reply:
            state.log(method, path, reply.status)
            self._send_json(
                reply.status, error_body(protocol, reply.status, reply.message, reply.code, reply.param)
            )
            return
        state.log(method, path, status)
        if route == "/v1/batches" and method == "POST" and state.roll(config.drop_after_create_rate):
            self.close_connection = True  # created, but the client never hears of it
            return
        if isinstance(payload, bytes):
            self._send_bytes(status, payload)
        elif isinstance(payload, RawJson):
            self._send_bytes(status, payload.encode("utf-8"), "application/json")
        else:
            self._send_json(status, payload)

    def _admin(self, method: str, path: str, body: bytes) -> None:
        state = self.server.state
        if path == "/_emulator/stats" and method == "GET":
            with state.lock:
                log = [entry._asdict() for entry in state.request_log]
                counts = {"batches": len(state.batches), "openai_batches": len(state.openai.batches)}
            self._send_json(200, {"requests": log, **counts})
        elif path == "/_emulator/config" and method == "POST":
            try:
                state.configure(json.loads(body or b"{}"))
            except (KeyError, ValueError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": f"no admin route {method} {path}"})

    # -- routes -------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        state = self.server.state
        if path == "/v1/files" and method == "POST":
            return 200, self._upload(body)
        if path == "/v1/files" and method == "GET":
            with state.lock:
                files = [f.as_json() for f in state.files.values()]
            return 200, {"data": files, "pagination_token": None}
        if match := _FILE_ROUTE.match(path):
            return self._file_route(method, match["id"], match["rest"])
        if path == "/v1/batches" and method == "POST":
            return 200, self._create_batch(body)
        if path == "/v1/batches" and method == "GET":
            limit, offset = _page_params(query)
            with state.lock:
                ids = state.batch_order[offset : offset + limit]
                batches = [state.batch_json(state.batches[i]) for i in ids]
                more = offset + limit < len(state.batch_order)
            return 200, {"batches": batches, "pagination_token": str(offset + limit) if more else None}
        if match := _BATCH_ROUTE.match(path):
            batch = state.batches.get(match["id"])
            if batch is None:
                raise Reply(404, f"batch {match['id']} not found", "not_found")
            return self._batch_route(method, batch, match["rest"], query, body)
        if path == "/v1/chat/completions" and method == "POST":
            request = json_object(body)
            if not isinstance(request.get("model"), str) or not request.get("messages"):
                raise Reply(400, "model and messages are required")
            config = state.config
            return 200, chat_completion(
                request,
                int(state.clock()),
                invalid_output_rate=config.invalid_output_rate,
                seed=config.seed,
            )
        raise Reply(404, f"no route {method} {path}", "not_found")

    def _upload(self, body: bytes) -> dict[str, Any]:
        state = self.server.state
        content_type = self.headers.get("Content-Type", "")
        filename, purpose, content = read_upload(content_type, body, state.config.max_file_bytes)
        return state.add_file(filename, purpose, content).as_json()

    def _file_route(self, method: str, file_id: str, rest: str | None) -> tuple[int, Any]:
        state = self.server.state
        record = state.files.get(file_id)
        if record is None:
            raise Reply(404, f"file {file_id} not found", "not_found")
        try:
            return record.reply(state, method, rest, "xai")
        except NotAllowedError as exc:
            raise Reply(405, str(exc)) from None

    def _create_batch(self, body: bytes) -> dict[str, Any]:
        state = self.server.state
        request = json_object(body)
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise Reply(400, "name is required")
        file_id = request.get("input_file_id")
        if file_id is not None and file_id not in state.files:
            raise Reply(404, f"file {file_id} not found", "not_found")
        return state.batch_json(state.create_batch(name, file_id))

    def _batch_route(
        self,
        method: str,
        batch: BatchRecord,
        rest: str | None,
        query: dict[str, list[str]],
        body: bytes,
    ) -> tuple[int, Any]:
        state = self.server.state
        if method == "GET" and rest is None:
            return 200, state.batch_json(batch)
        if method == "POST" and rest == ":cancel":
            state.cancel(batch)
            return 200, state.batch_json(batch)
        if method == "GET" and rest == "/results":
            limit, offset = _page_params(query)
            results, next_offset = state.results_page(batch, offset, limit)
            # A short page means the frontier of finished requests: the last page.
            token = state.config.last_page_token if len(results) < limit else str(next_offset)
            page = '{"results":[' + ",".join(results) + '],"pagination_token":' + json.dumps(token) + "}"
            return 200, RawJson(page)
        if method == "GET" and rest == "/requests":
            limit, offset = _page_params(query)
            items = state.request_states(batch)[offset : offset + limit]
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


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ServiceState) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.openai_routes = OpenAIRoutes(state)


class RunningEmulator:
    """An emulator serving in a background thread; `url` ends with /v1 (xAI unless
    config.protocol is "openai"), `openai_url` with /openai/v1 (always OpenAI)."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.state = ServiceState(config or EmulatorConfig())
        self.httpd = EmulatorHTTPServer((host, port), self.state)
        self.host, self.port = str(self.httpd.server_address[0]), int(self.httpd.server_address[1])
        self.url = f"http://{self.host}:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def openai_url(self) -> str:
        return f"http://{self.host}:{self.port}{OPENAI_PREFIX}/v1"

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    def configure(self, **changes: Any) -> None:
        self.state.configure(changes)

    def start(self) -> RunningEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> RunningEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
