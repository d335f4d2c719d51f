"""The product's logger, and the type of a logger a door may be handed instead (a flow
passes Prefect's run logger, so the lines show in the flow run's logs)."""

from __future__ import annotations

import logging
from typing import Any

LOGGER = logging.getLogger("grok_batch")
Log = logging.Logger | logging.LoggerAdapter[Any]
