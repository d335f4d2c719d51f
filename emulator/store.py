"""What both protocols share: the knobs, the clock, one lock, seeded ids and faults,
the files (uploaded inputs and written outputs) and the request log."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from emulator.config import EmulatorConfig


class LoggedRequest(NamedTuple):
    """One request as the service saw it; `time` (clock seconds) lets tests measure a client's pace."""

    method: str
    path: str
    status: int  # 0 = connection dropped without a reply, before the request was handled
    time: float
    replied: bool = True  # False: handled (`status`), then the connection dropped without the reply


@dataclass
class FileRecord:
    file_id: str
    filename: str
    purpose: str | None
    content: bytes
    created: float

    def as_json(self, flavor: str = "xai") -> dict[str, Any]:
        common = {
            "id": self.file_id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created),
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose or "batch",
        }
        if flavor == "openai":
            return {**common, "status": "processed", "status_details": None}
        return {**common, "public_url": None, "public_url_expires_at": None}


class Store:
    """Files and the request log, guarded by one lock that every batch of either protocol uses too."""

    def __init__(self, config: EmulatorConfig, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.request_log: list[LoggedRequest] = []
        self._rng = random.Random(config.seed)

    def configure(self, changes: dict[str, Any]) -> None:
        """Change knobs at run time; a new `seed` restarts the fault sequence."""
        with self.lock:
            self.config.update(changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)

    # -- bookkeeping --------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{uuid.UUID(int=self._rng.getrandbits(128))}"

    def roll(self, rate: float) -> bool:
        with self.lock:
            return rate > 0 and self._rng.random() < rate

    def log(self, method: str, path: str, status: int, replied: bool = True) -> None:
        with self.lock:
            self.request_log.append(LoggedRequest(method, path, status, self.clock(), replied))

    def times(
        self, method: str, path: str, status: int | None = None, replied: bool | None = None
    ) -> list[float]:
        """Clock times of the requests to `method path` (exact path), optionally with a status
        and only those whose reply was (`replied=True`) or was not (False) sent."""
        with self.lock:
            return [
                entry.time
                for entry in self.request_log
                if entry.method == method
                and entry.path == path
                and status in (None, entry.status)
                and replied in (None, entry.replied)
            ]

    def count(self, method: str, path: str, status: int | None = None, replied: bool | None = None) -> int:
        """How many requests hit `method path` (exact path), optionally with a status; a
        handled request counts with its status whether or not its reply got through."""
        return len(self.times(method, path, status, replied))

    # -- files --------------------------------------------------------------
    def add_file(
        self, filename: str, purpose: str | None, content: bytes, created: float | None = None
    ) -> FileRecord:
        with self.lock:
            moment = self.clock() if created is None else created
            record = FileRecord(self.new_id("file"), filename, purpose, content, moment)
            self.files[record.file_id] = record
            return record
