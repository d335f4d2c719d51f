"""One chat.completion body -> the normalized fields every provider and mode records.

Usage semantics differ: xAI's `completion_tokens` excludes reasoning tokens, OpenAI's
includes them. Records always hold visible output in `completion_tokens` and reasoning
in `reasoning_tokens`, so the same column means the same thing whatever answered.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.records import SUCCEEDED

TICK_USD = 1e-10  # xAI's cost_in_usd_ticks unit


def error_text(error: Any) -> tuple[str, int | str | None]:
    """(message, code) from an error given as {code, message}, {error: ...} or a string."""
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") or error.get("error") or str(error)
        if isinstance(message, dict):  # {"error": {"message": ...}}
            return error_text(message)
        return str(message), code if isinstance(code, int | str) else None
    return str(error), None


def completion_fields(completion: dict[str, Any], *, reasoning_in_completion: bool) -> dict[str, Any]:
    """A succeeded record's fields from a chat.completion body (custom_id not included)."""
    choice = (completion.get("choices") or [{}])[0]
    message_body = choice.get("message") or {}
    content = message_body.get("content")
    if content is None and message_body.get("tool_calls"):
        content = json.dumps(message_body["tool_calls"], ensure_ascii=False)
    usage = completion.get("usage") or {}
    completion_tokens = usage.get("completion_tokens")
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if reasoning_in_completion and isinstance(completion_tokens, int) and isinstance(reasoning, int):
        completion_tokens = max(0, completion_tokens - reasoning)
    ticks = usage.get("cost_in_usd_ticks")
    return {
        "status": SUCCEEDED,
        "retryable": False,
        "response": content,
        "finish_reason": choice.get("finish_reason"),
        "model": completion.get("model"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": completion_tokens,
        "reasoning_tokens": reasoning,
        "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
        "service_cost_usd": ticks * TICK_USD if isinstance(ticks, int | float) else None,
    }
