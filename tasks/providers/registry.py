"""Pick the provider a job names."""

from __future__ import annotations

from collections.abc import Callable

from tasks.infra.errors import JobSpecError
from tasks.providers.base import BatchProvider
from tasks.providers.openai_compat import OpenAIBatchProvider
from tasks.providers.xai import XaiProvider

PROVIDERS: dict[str, Callable[[str | None], BatchProvider]] = {
    "xai": XaiProvider,
    "openai": OpenAIBatchProvider,
}


def make_provider(name: str, base_url: str | None = None) -> BatchProvider:
    """The provider's client; `base_url` (from the job) wins over its environment variable."""
    try:
        return PROVIDERS[name](base_url)
    except KeyError:
        raise JobSpecError(
            f"field `provider`: unknown provider {name!r} (known: {', '.join(PROVIDERS)})"
        ) from None
