"""One chat.completion body -> the normalized fields every provider and mode records.

Usage semantics differ: xAI's `completion_tokens` excludes reasoning tokens, OpenAI's
includes them. Records always hold visible output in `completion_tokens` and reasoning
in `reasoning_tokens`, so the same column means the same thing whatever answered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from tasks.infra.records import RESULT_SCHEMA, SUCCEEDED
from tasks.money.pricing import Usage, ticks_to_usd

# A normalized record: records.RESULT_SCHEMA less what collect adds (batch_id, round).
RECORD_SCHEMA = pa.schema([f for f in RESULT_SCHEMA if f.name not in ("batch_id", "round")])


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
    raw_usage = completion.get("usage")
    fields: dict[str, Any] = {
        "status": SUCCEEDED,
        "retryable": False,
        "response": content,
        "finish_reason": choice.get("finish_reason"),
        "model": completion.get("model"),
    }
    if isinstance(raw_usage, dict):  # no usage: token columns stay null, not 0
        usage = (Usage.from_openai if reasoning_in_completion else Usage.from_xai)(raw_usage)
        fields.update(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_tokens=usage.cached_tokens,
            service_cost_usd=ticks_to_usd(raw_usage.get("cost_in_usd_ticks")),
        )
    return fields


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """Normalized records (dicts; a missing field is null) as a RECORD_SCHEMA table, column by
    column (Table.from_pylist costs ~25 us a row; this a few)."""
    return pa.table(
        [pa.array([r.get(f.name) for r in records], type=f.type) for f in RECORD_SCHEMA], schema=RECORD_SCHEMA
    )
