"""Numbers read from the environment (GROK_BATCH_*): a bad value is refused naming the variable."""

from __future__ import annotations

import math
import os

from tasks.infra.errors import InputError


def number_setting(name: str, default: float, *, least: float = 0.0, positive: bool = False) -> float:
    """$name as a finite number at least `least` (above 0 when `positive`), else `default`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value) or value < least or (positive and value <= 0):
        bound = "positive" if positive else f"{least:g} or more"
        raise InputError(f"{name}={text!r} must be {bound} (a finite number)")
    return value
