"""What Prefect is configured with, read the way Prefect reads it but without importing
Prefect (an import costs about a second): whether a server is configured, and whether a
local (ephemeral) database exists that could hold blocks."""

from __future__ import annotations

import os
import sqlite3
import sys
import tomllib
from contextlib import closing
from pathlib import Path
from typing import Any


def _home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def _active_profile() -> dict[str, Any]:
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or _home() / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    found = profiles.get("profiles", {}).get(active, {})
    return found if isinstance(found, dict) else {}


def _setting(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        value = _active_profile().get(name)
    return str(value).strip() or None if value is not None else None


def prefect_server() -> str | None:
    """The Prefect server runs report to (PREFECT_API_URL from the environment, else the
    active profile); None when none is configured: a run then needs no Prefect at all."""
    return _setting("PREFECT_API_URL")


def block_may_exist(name: str) -> bool:
    """Whether asking Prefect for the block `name` can find anything: a configured server may
    hold it; with none, only the local database can (where `prefect block create` keeps
    blocks), and asking would start a temporary server, so the file is looked in first."""
    if prefect_server() or "prefect.settings" in sys.modules:
        return True  # Prefect is loaded here (a flow, a test harness): its own settings decide
    if any(_setting(f"PREFECT_{part}_DATABASE_CONNECTION_URL") for part in ("API", "SERVER")):
        return True  # a database of its own choosing: ask Prefect
    database = _home() / "prefect.db"
    if not database.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)) as conn:
            found = conn.execute("SELECT 1 FROM block_document WHERE name = ? LIMIT 1", (name,)).fetchone()
    except sqlite3.Error:
        return True  # a layout we do not know: ask Prefect
    return found is not None
