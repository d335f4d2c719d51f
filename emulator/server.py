"""The HTTP server on loopback: it wires the shared store and both protocols' routes.

xAI's Batch protocol (xai_routes.py) answers under /v1, OpenAI's (openai_routes.py)
under /openai/v1, and under /v1 too when EmulatorConfig.protocol is "openai".
/_emulator/stats, /_emulator/config and /_emulator/forget (a batch the service no longer
knows: `{"batch_id": ...}`) are for tests and people poking at it.
Faults (429, 500, auth, and connections dropped before or after the request is handled)
apply to both protocols, each answering in its own shape.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.config import EmulatorConfig
from emulator.openai_routes import OpenAIRoutes
from emulator.openai_state import OpenAIBatches
from emulator.replies import RawJson, Reply, error_body
from emulator.store import Store
from emulator.xai_routes import XaiRoutes
from emulator.xai_state import XaiBatch, XaiBatches

OPENAI_PREFIX = "/openai"


def _protocol_and_route(path: str, config: EmulatorConfig) -> tuple[str, str]:
    """Which protocol answers `path`, and the path as that protocol's routes see it ("/v1/...")."""
    if path == f"{OPENAI_PREFIX}/v1" or path.startswith(f"{OPENAI_PREFIX}/v1/"):
        return "openai", path[len(OPENAI_PREFIX) :]
    return config.protocol, path


class ServiceState(Store):
    """The store with each protocol's batches on it; `batches` and `batch_order` are xAI's."""

    def __init__(self, config: EmulatorConfig, clock: Any = time.time) -> None:
        super().__init__(config, clock)
        self.xai = XaiBatches(self)
        self.openai = OpenAIBatches(self)

    @property
    def batches(self) -> dict[str, XaiBatch]:
        return self.xai.batches

    @property
    def batch_order(self) -> list[str]:
        return self.xai.order

    def forget_batch(self, batch_id: str) -> bool:
        """The service forgets a batch of either protocol (GET and every other route: 404)."""
        return self.xai.forget(batch_id) or self.openai.forget(batch_id)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # the request log lives in the store, never with headers (keys)

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
            routes = self.server.openai_routes if protocol == "openai" else self.server.xai_routes
            status, payload = routes.handle(
                method, route, parse_qs(url.query), body, self.headers.get("Content-Type", "")
            )
        except Reply as reply:
            state.log(method, path, reply.status)
            self._send_json(
                reply.status, error_body(protocol, reply.status, reply.message, reply.code, reply.param)
            )
            return
        created = route == "/v1/batches" and method == "POST" and state.roll(config.drop_after_create_rate)
        if created or state.roll(config.drop_after_handled_rate):
            state.log(method, path, status, replied=False)
            self.close_connection = True  # done (and billed), but the client never hears of it
            return
        state.log(method, path, status)
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
                counts = {"batches": len(state.xai.batches), "openai_batches": len(state.openai.batches)}
            self._send_json(200, {"requests": log, **counts})
        elif path == "/_emulator/config" and method == "POST":
            try:
                state.configure(json.loads(body or b"{}"))
            except (KeyError, ValueError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/forget" and method == "POST":
            try:
                batch_id = str(json.loads(body or b"{}")["batch_id"])
            except (KeyError, ValueError, TypeError):
                self._send_json(400, {"error": 'the body must be {"batch_id": "..."}'})
                return
            if state.forget_batch(batch_id):
                self._send_json(200, {"forgotten": batch_id})
            else:
                self._send_json(404, {"error": f"no batch {batch_id}"})
        else:
            self._send_json(404, {"error": f"no admin route {method} {path}"})


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ServiceState) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.xai_routes = XaiRoutes(state.xai)
        self.openai_routes = OpenAIRoutes(state.openai)


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

    def forget_batch(self, batch_id: str) -> bool:
        return self.state.forget_batch(batch_id)

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
