"""Logging for flows: every line goes to the flow run's log in Prefect and to the product
logger, which `grok-batch serve` prints, one line per thing that happened."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from prefect import get_run_logger

from tasks.infra.logs import LOGGER


class TeeLog(logging.LoggerAdapter[logging.Logger]):
    """The run logger and the product logger at once."""

    def __init__(self) -> None:
        super().__init__(LOGGER, {})
        self.run_logger = get_run_logger()
        if os.environ.get(PRINT_ENV) and not LOGGER.handlers:  # a flow-run process of `serve`
            print_product_log()

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.run_logger.log(level, msg, *args, **kwargs)
        LOGGER.log(level, msg, *args, **kwargs)


PRINT_ENV = "GROK_BATCH_PRINT_LOG"  # inherited by the processes `serve` starts for flow runs


def print_product_log() -> None:
    """Show the product logger's INFO lines on stdout (for a long-running `serve`)."""
    os.environ[PRINT_ENV] = "1"
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
