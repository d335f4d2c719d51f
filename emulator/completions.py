"""Deterministic stand-in answers: a pure function of the request, so tests can
recompute the answer every row should carry and prove it landed on that row.

Two usage flavours share the same token counts: xAI's `completion_tokens`
excludes reasoning and carries `cost_in_usd_ticks`; OpenAI's includes reasoning
and has no cost. Comparing them is how a client proves it reads each one right.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple

from emulator.structured import broken_answer, build_answer, dumps, response_schema

_POSITIVE = {
    "love", "loved", "great", "excellent", "perfect", "amazing", "good", "best",
    "happy", "recommend", "fantastic", "works", "sturdy", "comfortable", "fast",
}  # fmt: skip
_NEGATIVE = {
    "broke", "broken", "bad", "terrible", "awful", "worst", "refund", "return",
    "returned", "slow", "disappointed", "poor", "cheap", "stopped", "never", "late",
}  # fmt: skip
_WORD = re.compile(r"[a-z']+")


class ModelPrices(NamedTuple):
    """What the emulated service bills a model, USD per 1M tokens (reasoning billed as output)."""

    input: float
    cached_input: float
    output: float
    batch_discount: float = 0.0  # fraction off every token type for batch results
    long_threshold: int | None = None  # prompts of at least this many tokens bill at `long`
    long: tuple[float, float, float] | None = None  # input, cached input, output

    def per_million(self, prompt_tokens: int) -> tuple[float, float, float]:
        if self.long is not None and self.long_threshold is not None and prompt_tokens >= self.long_threshold:
            return self.long
        return self.input, self.cached_input, self.output


# What xAI bills, as `cost_in_usd_ticks` (1 tick = 1e-10 USD): "the actual amount billed, after
# all applicable discounts" (docs.x.ai, Cost tracking). The emulator imports nothing of the
# product (tests/unit/test_dependency_rule.py), so these MIRROR the xAI models of
# tasks/money/catalog/models.yaml, and a unit test checks that the two agree: standard prices,
# the >=200k long-context tier, and xAI's batch discount, which "varies by model": 20% off
# for grok-4.3 and the grok-4.20-0309 family, "Models not listed above have no batch discount."
_GROK_4_3_LONG = (2.50, 0.40, 5.00)
MODEL_PRICES: dict[str, ModelPrices] = {
    "grok-4.3": ModelPrices(1.25, 0.20, 2.50, 0.20, 200_000, _GROK_4_3_LONG),
    "grok-4.20-0309-reasoning": ModelPrices(1.25, 0.20, 2.50, 0.20, 200_000, _GROK_4_3_LONG),
    "grok-4.20-0309-non-reasoning": ModelPrices(1.25, 0.20, 2.50, 0.20, 200_000, _GROK_4_3_LONG),
    "grok-4.20-multi-agent-0309": ModelPrices(1.25, 0.20, 2.50, 0.20),
    "grok-4.5": ModelPrices(2.00, 0.50, 6.00),
    "grok-4.6": ModelPrices(2.00, 0.30, 6.00),
    "grok-4.7": ModelPrices(2.00, 0.30, 6.00),
    "grok-4-1-fast-reasoning": ModelPrices(0.20, 0.05, 0.50),
    "grok-4-1-fast-non-reasoning": ModelPrices(0.20, 0.05, 0.50),
    "grok-4-fast-reasoning": ModelPrices(0.20, 0.05, 0.50),
    "grok-3": ModelPrices(3.00, 0.75, 15.00),
    "grok-3-mini": ModelPrices(0.30, 0.075, 0.50),
    "grok-code-fast-1": ModelPrices(0.20, 0.02, 1.50),
}
# A model the table does not list (a test's made-up one) bills at grok-4.3's standard prices.
OTHER_MODEL_PRICES = ModelPrices(1.25, 0.20, 2.50)


def billed_ticks(
    model: str,
    prompt_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    *,
    batch: bool,
    bill_factor: float = 1.0,
) -> int:
    """What the service bills one request, in ticks: standard prices for a synchronous call,
    the model's batch discount for a batch result, times `bill_factor` (1.0: exactly the
    catalog's figure; above it, a service that bills more than the catalog says)."""
    prices = MODEL_PRICES.get(model, OTHER_MODEL_PRICES)
    price_in, price_cached, price_out = prices.per_million(prompt_tokens)
    keep = (1.0 - prices.batch_discount) if batch else 1.0
    uncached = max(prompt_tokens - cached_tokens, 0)
    usd = (uncached * price_in + cached_tokens * price_cached + output_tokens * price_out) / 1e6
    return round(usd * keep * bill_factor * 1e10)


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
    words = set(_WORD.findall(text.lower()))  # distinct words: set operations stay in C
    score = len(words & _POSITIVE) - len(words & _NEGATIVE)
    if score > 0:
        return "positive"
    if score < 0:
        return "negative"
    return "neutral"


def _plain_answer(body: dict[str, Any], digest: str) -> str:
    return f"{_sentiment(_user_text(body))} (emulated answer {digest})"


def structured_answer(body: dict[str, Any], digest: str | None = None) -> dict[str, Any] | None:
    """The object answered to a `response_format` request (None without one): each property of
    the schema filled from the request's sentiment, answer text and digest."""
    schema = response_schema(body)
    if schema is None:
        return None
    digest = digest or request_digest(body)
    return build_answer(schema, _sentiment(_user_text(body)), _plain_answer(body, digest), digest)


def expected_answer(body: dict[str, Any], digest: str | None = None) -> str:
    """The full answer the emulator gives to `body` (before any max_tokens cut); JSON text
    for structured requests."""
    digest = digest or request_digest(body)
    if "response_format" not in body:  # the hot path of million-row result pages
        return _plain_answer(body, digest)
    structured = structured_answer(body, digest)
    return _plain_answer(body, digest) if structured is None else dumps(structured)


def invalid_output(body: dict[str, Any], rate: float, seed: int, digest: str | None = None) -> str | None:
    """The schema-breaking content given instead of the structured answer, or None.

    Chosen from seed + request digest (not from a random stream), so the batch and the
    sync route break the same requests."""
    schema = response_schema(body)
    if schema is None or rate <= 0:
        return None
    digest = digest or request_digest(body)
    roll = int(hashlib.sha256(f"{seed}:{digest}:invalid".encode()).hexdigest()[:8], 16) / 2**32
    if roll >= rate:
        return None
    answer = structured_answer(body, digest) or {}
    return broken_answer(schema, answer, _sentiment(_user_text(body)), digest)


def _tokens(text: Any) -> int:
    size = len(text) if isinstance(text, str) else len(json.dumps(text))
    return max(1, size // 4)


def _is_reasoning_model(model: str) -> bool:
    return "reasoning" in model and "non-reasoning" not in model


class _Completion(NamedTuple):
    digest: str
    model: str
    answer: str
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost_ticks: int


def _complete(
    body: dict[str, Any], invalid_output_rate: float, seed: int, batch: bool, bill_factor: float
) -> _Completion:
    model = str(body.get("model", ""))
    digest = request_digest(body)
    broken = invalid_output(body, invalid_output_rate, seed, digest) if invalid_output_rate > 0 else None
    answer = broken if broken is not None else expected_answer(body, digest)
    finish_reason = "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0 and _tokens(answer) > max_tokens:
        answer = answer[: max_tokens * 4]
        finish_reason = "length"
    messages = body.get("messages") or []
    prompt_tokens = sum(_tokens(m.get("content", "")) + 3 for m in messages)
    system_tokens = sum(_tokens(m.get("content", "")) + 3 for m in messages if m.get("role") == "system")
    completion_tokens = _tokens(answer)
    reasoning_tokens = 2 * completion_tokens if _is_reasoning_model(model) else 0
    ticks = billed_ticks(
        model,
        prompt_tokens,
        system_tokens,
        completion_tokens + reasoning_tokens,
        batch=batch,
        bill_factor=bill_factor,
    )
    return _Completion(
        digest, model, answer, finish_reason, prompt_tokens, system_tokens, completion_tokens,
        reasoning_tokens, ticks,
    )  # fmt: skip


def chat_completion(
    body: dict[str, Any],
    created: int,
    flavor: str = "xai",
    *,
    invalid_output_rate: float = 0.0,
    seed: int = 0,
    batch: bool = False,
    bill_factor: float = 1.0,
) -> dict[str, Any]:
    """A chat.completion body in xAI's usage shape (completion_tokens excludes reasoning), or
    with flavor="openai" in OpenAI's (completion_tokens includes reasoning, no cost). xAI's
    `cost_in_usd_ticks` is the bill: at standard prices for a synchronous call, and with the
    model's batch discount for a batch result (`batch=True`); see `billed_ticks`."""
    c = _complete(body, invalid_output_rate, seed, batch, bill_factor)
    if flavor == "openai":
        return _openai_completion(c, created)
    return {
        "id": f"emu-{c.digest}",
        "object": "chat.completion",
        "created": created,
        "model": c.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.answer, "refusal": None},
                "finish_reason": c.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens + c.reasoning_tokens,
            "prompt_tokens_details": {
                "text_tokens": c.prompt_tokens,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": c.cached_tokens,
            },
            "completion_tokens_details": {
                "reasoning_tokens": c.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "num_sources_used": 0,
            "cost_in_usd_ticks": c.cost_ticks,
        },
        "system_fingerprint": "fp_emulator",
    }


def _openai_completion(c: _Completion, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-emu-{c.digest}",
        "object": "chat.completion",
        "created": created,
        "model": c.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.answer, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens + c.reasoning_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens + c.reasoning_tokens,
            "prompt_tokens_details": {"cached_tokens": c.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": c.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


# The same document as chat_completion(), formatted directly: result pages of a
# million-request batch are built ~3x faster this way than through json.dumps of dicts.
_COMPLETION_JSON = (
    '{"id":"emu-%s","object":"chat.completion","created":%d,"model":%s,"choices":[{"index":0,'
    '"message":{"role":"assistant","content":%s,"refusal":null},"finish_reason":"%s"}],'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    '"prompt_tokens_details":{"text_tokens":%d,"audio_tokens":0,"image_tokens":0,"cached_tokens":%d},'
    '"completion_tokens_details":{"reasoning_tokens":%d,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},"num_sources_used":0,'
    '"cost_in_usd_ticks":%d},"system_fingerprint":"fp_emulator"}'
)


def chat_completion_json(
    body: dict[str, Any],
    created: int,
    flavor: str = "xai",
    *,
    invalid_output_rate: float = 0.0,
    seed: int = 0,
    batch: bool = False,
    bill_factor: float = 1.0,
) -> str:
    """chat_completion() as JSON text (preformatted for the xAI flavour, which pages millions)."""
    if flavor == "openai":
        document = chat_completion(body, created, flavor, invalid_output_rate=invalid_output_rate, seed=seed)
        return json.dumps(document, ensure_ascii=False)
    c = _complete(body, invalid_output_rate, seed, batch, bill_factor)
    return _COMPLETION_JSON % (
        c.digest, created, json.dumps(c.model, ensure_ascii=False), json.dumps(c.answer, ensure_ascii=False),
        c.finish_reason, c.prompt_tokens, c.completion_tokens,
        c.prompt_tokens + c.completion_tokens + c.reasoning_tokens, c.prompt_tokens, c.cached_tokens,
        c.reasoning_tokens, c.cost_ticks,
    )  # fmt: skip
