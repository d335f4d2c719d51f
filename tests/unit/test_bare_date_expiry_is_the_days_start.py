"""A bare-date expiry (xAI's REST docs show `"expire_time": "2025-11-12"`) names that day's
00:00 UTC, the earliest reading: the reference does not say which moment of the day it is, and
judging expiry early only sends unfinished (unbilled) rows again, while judging it late can
miss the results the service stops serving."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.providers.base import BatchState
from tasks.providers.xai import batch_status_from_json, parse_service_time

RUNNING = {"num_requests": 4, "num_pending": 2, "num_success": 2, "num_error": 0, "num_cancelled": 0}


def test_a_bare_date_is_that_days_midnight_utc() -> None:
    assert parse_service_time("2026-11-26") == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert parse_service_time("2026-11-26T00:00:00Z") == parse_service_time("2026-11-26")


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC), BatchState.RUNNING),
        (datetime(2026, 11, 26, 0, 0, tzinfo=UTC), BatchState.EXPIRED),
        (datetime(2026, 11, 26, 18, 0, tzinfo=UTC), BatchState.EXPIRED),  # was RUNNING (day's end)
    ],
)
def test_a_batch_with_a_bare_date_expiry_expires_as_that_day_begins(now: datetime, state: BatchState) -> None:
    data = {"batch_id": "batch_1", "expire_time": "2026-11-26", "cancel_time": None, "state": RUNNING}
    assert batch_status_from_json(data, now).state == state


def test_the_guides_expires_at_is_read_too() -> None:
    data = {"batch_id": "batch_1", "expires_at": "2026-11-26", "cancel_time": None, "state": RUNNING}
    assert batch_status_from_json(data, datetime(2026, 11, 26, 1, tzinfo=UTC)).state == BatchState.EXPIRED
