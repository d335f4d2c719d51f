from datetime import UTC, datetime

import pytest

from tasks.providers.base import BatchState
from tasks.providers.xai import batch_status_from_json, normalize_result, parse_service_time

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def batch(counters: dict | None = None, **fields) -> dict:
    state = {"num_requests": 0, "num_pending": 0, "num_success": 0, "num_error": 0, "num_cancelled": 0}
    state.update(counters or {})
    return {"batch_id": "batch_1", "expire_time": "2026-11-27T12:00:00Z", "cancel_time": None,
            "cancel_by_xai_message": None, "state": state, **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (batch(), BatchState.VALIDATING),  # all-zero counters while parsing: NOT done
        (batch({"num_requests": 5, "num_pending": 3, "num_success": 2}), BatchState.RUNNING),
        (batch({"num_requests": 5, "num_success": 4, "num_error": 1}), BatchState.DONE),
        (
            batch(
                cancel_time="2026-11-26T11:00:00Z", cancel_by_xai_message="JSONL file validation failed: x"
            ),
            BatchState.REJECTED,  # counters stay 0; only the message tells
        ),
        (
            batch({"num_requests": 5, "num_cancelled": 5}, cancel_time="2026-11-26T11:00:00Z"),
            BatchState.CANCELLED,
        ),
        (
            batch({"num_requests": 5, "num_pending": 2}, expire_time="2026-11-26T11:59:00Z"),
            BatchState.EXPIRED,
        ),
        (batch({"num_requests": 5, "num_success": 5}, expire_time="2026-11-26T11:59:00Z"), BatchState.DONE),
        (batch(expire_time="2026-11-25"), BatchState.EXPIRED),  # never parsed before its date ended
        # A bare date is that day's 00:00 UTC (the earliest reading): past at NOW, on the 26th.
        (batch({"num_requests": 5, "num_pending": 1}, expire_time="2026-11-26"), BatchState.EXPIRED),
        (batch({"num_requests": 5, "num_pending": 1}, expire_time="2026-11-27"), BatchState.RUNNING),
    ],
)
def test_counters_map_to_one_state(data: dict, state: BatchState) -> None:
    assert batch_status_from_json(data, NOW).state == state


def test_rejection_message_is_kept() -> None:
    status = batch_status_from_json(
        batch(cancel_time="2026-11-26", cancel_by_xai_message="Model grok-4.5 is not supported"), NOW
    )
    assert status.message == "Model grok-4.5 is not supported"


def test_times_parse_in_both_forms() -> None:
    assert parse_service_time("2026-11-26T10:00:00.123Z") == datetime(
        2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC
    )
    assert parse_service_time("2026-11-26") == datetime(2026, 11, 26, tzinfo=UTC)  # the day's 00:00
    assert parse_service_time("garbage") is None and parse_service_time(None) is None


COMPLETION = {
    "model": "grok-4.3",
    "choices": [{"message": {"content": "303"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 706, "completion_tokens": 22, "total_tokens": 827, "cost_in_usd_ticks": 12_345_000,
        "prompt_tokens_details": {"cached_tokens": 679},
        "completion_tokens_details": {"reasoning_tokens": 99},
    },
}  # fmt: skip


def test_success_result_is_normalized() -> None:
    item = {"batch_request_id": "r1", "batch_result": {"response": {"chat_get_completion": COMPLETION}}}
    record = normalize_result(item)
    assert record == {
        "custom_id": "r1", "status": "succeeded", "retryable": False, "response": "303",
        "finish_reason": "stop", "model": "grok-4.3", "prompt_tokens": 706, "completion_tokens": 22,
        "reasoning_tokens": 99, "cached_tokens": 679, "service_cost_usd": pytest.approx(0.0012345),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("item", "status", "error", "retryable"),
    [
        ({"batch_result": {"error": {"code": 13, "message": "internal"}}}, "failed", "internal", True),
        ({"batch_result": {"error": {"code": 3, "message": "bad arg"}}}, "failed", "bad arg", False),
        ({"batch_result": {"error": "plain string error"}}, "failed", "plain string error", True),
        ({"batch_result": {}, "error_message": "top-level message"}, "failed", "top-level message", True),
        ({"batch_result": {"error": {"code": 1, "message": "cancelled"}}}, "cancelled", "cancelled", False),
    ],
)
def test_all_error_shapes_are_accepted(item: dict, status: str, error: str, retryable: bool) -> None:
    record = normalize_result({"batch_request_id": "r1", **item})
    assert (record["status"], record["error"], record["retryable"]) == (status, error, retryable)


def test_status_code_zero_with_a_response_is_success() -> None:
    item = {
        "batch_request_id": "r1",
        "batch_result": {"error": {"code": 0}, "response": {"chat_get_completion": COMPLETION}},
    }
    assert normalize_result(item)["status"] == "succeeded"


def test_cancel_with_a_message_after_parsing_keeps_its_results() -> None:
    data = batch(
        {"num_requests": 50, "num_success": 30, "num_cancelled": 20},
        cancel_time="2026-11-26T11:00:00Z",
        cancel_by_xai_message="cancelled by xAI: capacity",
    )
    status = batch_status_from_json(data, NOW)
    assert status.state == BatchState.CANCELLED and status.message == "cancelled by xAI: capacity"
