"""Pick the provider a job names."""

from __future__ import annotations

from tasks.errors import JobSpecError
from tasks.providers.base import BatchProvider
from tasks.providers.xai import XaiProvider


def make_provider(name: str) -> BatchProvider:
    if name == "xai":
        return XaiProvider()
    raise JobSpecError(f"field `provider`: unknown provider {name!r} (known: xai)")
