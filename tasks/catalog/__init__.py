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
