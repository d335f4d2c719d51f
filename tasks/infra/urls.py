"""Telling a URL (s3://bucket/key) from a path, without importing any filesystem."""

from __future__ import annotations

import re
from pathlib import Path

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(target: str | Path) -> str:
    """'s3' for s3://bucket/x, '' for a plain path (file:// is a path too)."""
    found = _SCHEME.match(str(target))
    scheme = found.group(1).lower() if found else ""
    return "" if scheme == "file" else scheme


def is_remote(target: str | Path) -> bool:
    return bool(scheme_of(target))


def plain_path(target: str | Path) -> Path:
    """A path as given (file:// dropped, ~ expanded); for names that are not URLs."""
    return Path(str(target).removeprefix("file://")).expanduser()
