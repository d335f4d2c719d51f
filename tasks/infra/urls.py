"""Telling a URL (s3://bucket/key) from a path, without importing any filesystem."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.infra.errors import StorageError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# `s3:/bucket/x` is a URL missing a slash, not a local folder named "s3:" (one letter is a
# Windows drive, C:/x; `file:/x` is a proper file URL)
_BROKEN_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")


class BrokenURLError(StorageError, ValueError):
    """`s3:/bucket/x`: refused, never taken for a folder named `s3:` (a ValueError too, so a
    command-line parser reports it as a bad value)."""


def scheme_of(target: str | Path) -> str:
    """'s3' for s3://bucket/x, '' for a plain path (file:// is a path too)."""
    found = _SCHEME.match(str(target))
    scheme = found.group(1).lower() if found else ""
    return "" if scheme == "file" else scheme


def is_remote(target: str | Path) -> bool:
    return bool(scheme_of(target))


def plain_path(target: str | Path) -> Path:
    """A path as given (file:// or file: dropped, ~ expanded); for names that are not URLs."""
    text = str(target)
    text = text.removeprefix("file://") if text.startswith("file://") else text.removeprefix("file:")
    refuse_broken(text)
    return Path(text).expanduser()


def refuse_broken(text: str) -> None:
    broken = _BROKEN_URL.match(text)
    if broken:
        scheme = broken.group(1).lower()
        raise BrokenURLError(f"{text}: not a URL nor a path (write {scheme}://BUCKET/path, two slashes)")
