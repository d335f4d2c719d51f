"""Process defaults for a terminal tool, applied once before Prefect is first imported."""

from __future__ import annotations

import logging
import os

from tasks.infra.errors import GrokBatchError

_PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def quiet_prefect_defaults() -> None:
    """Quiet, offline-friendly Prefect defaults (the user's environment wins), and no Prefect
    traceback for an error the CLI reports itself. Prefect reads its settings when it is first
    imported, so this runs before any command imports it; calling it again changes nothing."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" in os.environ and not os.environ["PREFECT_API_URL"].strip():
        del os.environ["PREFECT_API_URL"]  # set but empty means none, not a URL Prefect chokes on
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
    for name in _PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ShownOnce) for f in logger.filters):
            logger.addFilter(_ShownOnce())


class _ShownOnce(logging.Filter):
    """Drop Prefect's traceback for errors the CLI reports itself in one clear line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GrokBatchError):
            return False
        message = record.getMessage()
        return not any(f"exception {name}:" in message for name in _user_error_names(GrokBatchError))


def _user_error_names(base: type[Exception]) -> set[str]:
    names = {base.__name__}
    for subclass in base.__subclasses__():
        names |= _user_error_names(subclass)
    return names
