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
    value = secret_value(secret_block)
    if value:
        return value
    raise ProviderError(
        f"no API key: set the environment variable {env_var}, or save a Prefect Secret block "
        f"named {secret_block!r} (prefect block create secret)"
    )


def secret_value(name: str) -> str:
    """A Prefect Secret block's value as text, or \"\" when there is none (never logged)."""
    value = secret_object(name)
    return "" if value is None else str(value).strip()


def secret_object(name: str) -> Any:
    """A Prefect Secret block's value as Prefect gives it (a JSON object saved as one comes back
    a dict), or None when there is none."""
    if not block_may_exist(name):  # asking would start a Prefect server for nothing
        return None
    try:
        from prefect.blocks.system import Secret

        secret: Any = Secret.load(name)
        return secret.get()
    except Exception:
        return None
