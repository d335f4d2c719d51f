"""What both protocols' routes share: error replies in each service's shape, JSON
bodies, multipart uploads, and the `Routes` base (file GET / content / DELETE and
chat completions, the same in both but for wording)."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, ClassVar, Generic, TypeVar

from emulator.completions import chat_completion
from emulator.lifecycle import BatchBook

FILE_ROUTE = re.compile(r"^/v1/files/(?P<id>[^/]+)(?P<rest>/content)?$")  # one file, or its /content

# OpenAI's `error.type` by status; clients mostly branch on the status, some log the type.
_OPENAI_TYPES = {401: "invalid_request_error", 429: "requests", 500: "server_error"}


class Reply(Exception):  # noqa: N818 (a reply, not an error)
    """Raised inside a route to answer with an error status."""

    def __init__(
        self, status: int, message: str, code: str | None = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class RawJson(str):
    """A reply that is already JSON text (result pages are built from pre-rendered rows)."""


def error_body(protocol: str, status: int, message: str, code: str | None, param: str | None = None) -> Any:
    """xAI answers {code, error}; OpenAI answers {error: {message, type, param, code}}."""
    if protocol == "openai":
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {"code": code, "error": message}


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise Reply(400, "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Reply(400, "body must be a JSON object")
    return value


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    header = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            parts[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


def read_upload(content_type: str, body: bytes, max_bytes: int) -> tuple[str, str | None, bytes]:
    """(filename, purpose or None, content) of a multipart file upload."""
    if not content_type.startswith("multipart/form-data"):
        raise Reply(400, "upload must be multipart/form-data")
    parts = _parse_multipart(content_type, body)
    if "file" not in parts:
        raise Reply(400, "multipart field 'file' is required", param="file")
    filename, content = parts["file"]
    if len(content) > max_bytes:
        raise Reply(413, f"File is too large ({len(content)} bytes).")
    purpose = parts["purpose"][1].decode() if "purpose" in parts else None
    return filename or "upload.jsonl", purpose, content


Book = TypeVar("Book", bound=BatchBook[Any])


class Routes(ABC, Generic[Book]):
    """One protocol's routes over its batches and the shared store."""

    flavor: ClassVar[str]  # the file and chat.completion shapes
    missing_code: ClassVar[str | None]  # error code of a chat request without model or messages

    def __init__(self, batches: Book) -> None:
        self.batches = batches
        self.store = batches.store

    @abstractmethod
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> tuple[int, Any]:
        """(status, payload) of one request; `path` starts with /v1."""

    @abstractmethod
    def _file_missing(self, file_id: str, param: str) -> Reply:
        """The 404 for an unknown file named by `param`."""

    def _file_route(self, method: str, file_id: str, rest: str | None) -> tuple[int, Any]:
        """GET (metadata or /content) and DELETE of one file."""
        store = self.store
        record = store.files.get(file_id)
        if record is None:
            raise self._file_missing(file_id, "id")
        if method == "GET" and rest == "/content":
            return 200, record.content
        if method == "GET" and rest is None:
            return 200, record.as_json(self.flavor)
        if method == "DELETE" and rest is None:
            with store.lock:
                store.files.pop(file_id, None)
            return 200, {"id": file_id, "object": "file", "deleted": True}
        raise Reply(405, f"{method} not allowed here")

    def _chat_completion(self, body: bytes) -> dict[str, Any]:
        request = json_object(body)
        if not isinstance(request.get("model"), str) or not request.get("messages"):
            raise Reply(400, "model and messages are required", self.missing_code)
        config = self.store.config
        return chat_completion(
            request,
            int(self.store.clock()),
            self.flavor,
            invalid_output_rate=config.invalid_output_rate,
            seed=config.seed,
            bill_factor=config.bill_factor,  # a synchronous call: standard prices
        )
