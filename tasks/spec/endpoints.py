"""Where each provider is reached: its default server, and the environment variables and
Prefect Secret block a job falls back on. Plain data, so that the row cache (and anything
else that must know who answers) can resolve the server without a client."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    base_url_env: str
    api_key_env: str
    secret_block: str
    default_base_url: str

    def resolve(self, base_url: str | None = None) -> str:
        """The job's URL, else the environment variable, else the public service."""
        return (base_url or os.environ.get(self.base_url_env) or self.default_base_url).rstrip("/")


ENDPOINTS: dict[str, Endpoint] = {
    "xai": Endpoint("XAI_BASE_URL", "XAI_API_KEY", "xai-api-key", "https://api.x.ai/v1"),
    "openai": Endpoint("OPENAI_BASE_URL", "OPENAI_API_KEY", "openai-api-key", "https://api.openai.com/v1"),
}


def server_url(provider: str, base_url: str | None = None) -> str:
    """The server that answers a job's requests."""
    return ENDPOINTS[provider].resolve(base_url)
