"""Deterministic stand-in answers: a pure function of the request, so tests can
recompute the answer every row should carry and prove it landed on that row."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_POSITIVE = {
    "love", "loved", "great", "excellent", "perfect", "amazing", "good", "best",
    "happy", "recommend", "fantastic", "works", "sturdy", "comfortable", "fast",
}  # fmt: skip
_NEGATIVE = {
    "broke", "broken", "bad", "terrible", "awful", "worst", "refund", "return",
    "returned", "slow", "disappointed", "poor", "cheap", "stopped", "never", "late",
}  # fmt: skip
_WORD = re.compile(r"[a-z']+")

# Per-million-token prices the emulator bills in `cost_in_usd_ticks` (1 tick = 1e-10 USD).
_EMULATOR_PRICE_PER_M = (1.25, 0.20, 2.50)  # input, cached input, output


def request_digest(body: dict[str, Any]) -> str:
    """Stable fingerprint of what the model is asked; the answer is derived from it."""
    canonical = json.dumps(
        {"model": body.get("model"), "messages": body.get("messages")},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _sentiment(text: str) -> str:
    words = _WORD.findall(text.lower())
    score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
    if score > 0:
        return "positive"
    if score < 0:
        return "negative"
    return "neutral"


def expected_answer(body: dict[str, Any]) -> str:
    """The full answer the emulator gives to `body` (before any max_tokens cut)."""
    return f"{_sentiment(_user_text(body))} (emulated answer {request_digest(body)})"


def _tokens(text: str) -> int:
    return max(1, len(text.encode("utf-8")) // 4)


def _is_reasoning_model(model: str) -> bool:
    return "reasoning" in model and "non-reasoning" not in model


def chat_completion(body: dict[str, Any], created: int) -> dict[str, Any]:
    """A chat.completion body with xAI's usage shape (completion_tokens excludes reasoning)."""
    model = str(body.get("model", ""))
    answer = expected_answer(body)
    finish_reason = "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0 and _tokens(answer) > max_tokens:
        answer = answer[: max_tokens * 4]
        finish_reason = "length"
    messages = body.get("messages") or []
    prompt_tokens = sum(_tokens(json.dumps(m.get("content", ""))) + 3 for m in messages)
    system_tokens = sum(
        _tokens(json.dumps(m.get("content", ""))) + 3 for m in messages if m.get("role") == "system"
    )
    completion_tokens = _tokens(answer)
    reasoning_tokens = 2 * completion_tokens if _is_reasoning_model(model) else 0
    price_in, price_cached, price_out = _EMULATOR_PRICE_PER_M
    cost_usd = (
        (prompt_tokens - system_tokens) * price_in
        + system_tokens * price_cached
        + (completion_tokens + reasoning_tokens) * price_out
    ) / 1e6
    return {
        "id": f"emu-{request_digest(body)}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens + reasoning_tokens,
            "prompt_tokens_details": {
                "text_tokens": prompt_tokens,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": system_tokens,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "num_sources_used": 0,
            "cost_in_usd_ticks": round(cost_usd * 1e10),
        },
        "system_fingerprint": "fp_emulator",
    }
