"""The model catalog (context windows, prices, batch acceptance) as data: models.yaml,
overridable with GROK_BATCH_CATALOG."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import JobSpecError

BUILTIN_CATALOG = Path(__file__).with_name("models.yaml")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    context_window: int
    prices: dict[str, float]
    batch_discount: float
    batch_accepted: bool
    source: str = ""
    as_of: str = ""


@cache
def _load(path: Path) -> dict[str, ModelInfo]:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        return {name: ModelInfo(name=name, **fields) for name, fields in (data.get("models") or {}).items()}
    except (OSError, yaml.YAMLError, TypeError, AttributeError) as exc:
        raise JobSpecError(f"model catalog {path} cannot be used: {exc}") from None


def catalog_path() -> Path:
    return Path(os.environ.get("GROK_BATCH_CATALOG") or BUILTIN_CATALOG)


def model_info(model: str) -> ModelInfo | None:
    """What the catalog knows of `model`, or None for a model it does not list."""
    return _load(catalog_path()).get(model)


def check_batch_model(model: str) -> str | None:
    """Refuse a model the batch endpoint is known to reject (it would sink every batch, with
    only `cancel_by_xai_message` to tell); return a warning for a model the catalog lacks."""
    info = model_info(model)
    if info is None:
        return (
            f"model {model!r} is not in the model catalog ({catalog_path()}); the batch endpoint may "
            "reject it, which fails the whole file"
        )
    if not info.batch_accepted:
        accepted = sorted(name for name, m in _load(catalog_path()).items() if m.batch_accepted)
        raise JobSpecError(
            f"field `model`: {model} is not accepted by the xAI batch endpoint "
            f"(catalog, as of {info.as_of}: {info.source}). Use one of: {', '.join(accepted)}"
        )
    return None
