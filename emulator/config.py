"""The emulator's knobs, shared by both protocols so one server can play either service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Models that accepted batch requests in live tests (reference §1.5); everything
# else is refused with xAI's message. Configurable per emulator.
DEFAULT_BATCH_MODELS = frozenset(
    {
        "grok-4.3",
        "grok-4.20-0309-reasoning",
        "grok-4.20-0309-non-reasoning",
        "grok-4.20-multi-agent-0309",
        "grok-4-1-fast-reasoning",
        "grok-4-1-fast-non-reasoning",
        "grok-4-fast-reasoning",
        "grok-4-fast-non-reasoning",
        "grok-3",
    }
)
BATCH_URLS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos/generations",
        "/v1/videos",
        "/v1/videos/edits",
        "/v1/videos/extensions",
    }
)
PROTOCOLS = ("xai", "openai")
_FROZEN_SETS = ("batch_models", "openai_models")


@dataclass
class EmulatorConfig:
    """Knobs of the emulated service; every fault is off by default."""

    api_key: str | None = "emulator-key"  # None accepts any bearer token
    protocol: str = "xai"  # what the plain /v1 routes speak; /openai/v1 is always OpenAI
    batch_models: frozenset[str] = DEFAULT_BATCH_MODELS
    openai_models: frozenset[str] | None = None  # models OpenAI batches accept; None = any
    parse_delay_s: float = 0.2  # counters stay 0 (OpenAI: `validating`) this long after create
    processing_s: float = 1.0  # time from parse until the last request finishes
    finalizing_s: float = 0.0  # OpenAI: time in `finalizing` after the last request
    cancelling_s: float = 0.0  # OpenAI: time in `cancelling` before `cancelled`
    expire_after_s: float = 86_400.0
    fail_rate: float = 0.0  # fraction of requests that end with an error result
    invalid_output_rate: float = 0.0  # fraction of structured answers that break their schema
    # xAI's cost_in_usd_ticks = the catalog's figure (batch discount for batch results) x this;
    # e.g. 1.3 plays a service that bills 30% more than the catalog says.
    bill_factor: float = 1.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    drop_rate: float = 0.0  # connections closed without any response, before the request is handled
    # Any request handled (and billed: a chat completion is paid), then the connection closed
    # without the reply: what a client sees is the same as a `drop_rate` drop.
    drop_after_handled_rate: float = 0.0
    drop_after_create_rate: float = 0.0  # batch created, then the reply is lost
    retry_after_s: float = 1.0
    error_shape: str = "object"  # "object" -> {code, message}; "string"
    error_file_id_empty: bool = False  # OpenAI: "" instead of null when nothing failed
    last_page_token: str | None = None  # None -> null; "" -> empty string
    timestamps: str = "rfc3339"  # or "date" (bare YYYY-MM-DD, as REST docs show)
    max_file_bytes: int = 50 * 1024 * 1024
    max_lines: int = 50_000
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise KeyError(f"unknown emulator setting {key!r}")
            if key == "protocol" and value not in PROTOCOLS:
                raise ValueError(f"protocol must be one of {PROTOCOLS}, not {value!r}")
            setattr(self, key, frozenset(value) if key in _FROZEN_SETS and value is not None else value)
