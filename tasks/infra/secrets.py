"""The API key is read where it is used: from the environment, else a Prefect Secret block.

It is never a flow parameter and never written to the run directory, the ledger, a log
line or an artifact; errors name the variable, never its value.
"""

from __future__ import annotations

import os
from typing import Any

from tasks.infra.errors import ProviderError
from tasks.infra.prefect_config import block_may_exist


def resolve_api_key(env_var: str, secret_block: str) -> str:
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    if block_may_exist(secret_block):  # asking would start a Prefect server for nothing
        value = secret_value(secret_block)
    if value:
        return value
    raise ProviderError(
        f"no API key: set the environment variable {env_var}, or save a Prefect Secret block "
        f"named {secret_block!r} (prefect block create secret)"
    )


def secret_value(name: str) -> str:
    """A Prefect Secret block's value, or \"\" when there is none (never logged)."""
    try:
        from prefect.blocks.system import Secret

        secret: Any = Secret.load(name)
        return str(secret.get()).strip()
    except Exception:
        return ""
