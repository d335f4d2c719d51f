"""The model catalog (provider, context window, prices, batch acceptance) as data: models.yaml.

Prices change every few months, so they live in a YAML file that carries each figure's source
and date, not in code. The file in use is, in order: a path given per job, the environment
variable GROK_BATCH_CATALOG, the builtin models.yaml. The file is checked field by field when
read: a wrong price would silently misstate every cost, so a bad catalog is a JobSpecError that
names the file, the model and the field.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tasks.infra.errors import JobSpecError
from tasks.spec.endpoints import ENDPOINTS, server_url

BUILTIN_CATALOG = Path(__file__).with_name("models.yaml")
CATALOG_ENV = "GROK_BATCH_CATALOG"
PROVIDERS = ("xai", "openai")
_PROVIDER_NAMES = {"xai": "xAI", "openai": "OpenAI"}  # for messages
PRICE_KEYS = ("input", "cached_input", "output")

_REQUIRED = ("provider", "context_window", "prices", "batch_accepted")
_OPTIONAL = ("batch_discount", "batch_prices", "long_context", "source", "as_of")
_LONG_KEYS = ("threshold", "prices", "batch_prices")


@dataclass(frozen=True)
class LongContext:
    """A price tier for long prompts: a request whose prompt has at least `threshold` tokens is
    billed entirely at `prices` (xAI grok-4.3: 200k). `batch_prices` is None when batch mode
    takes the model's usual batch discount off `prices`."""

    threshold: int
    prices: dict[str, float]
    batch_prices: dict[str, float] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """One catalog entry. Prices are USD per 1M tokens keyed by PRICE_KEYS. Exactly one of
    `batch_discount` (a fraction off every token type) and `batch_prices` is set."""

    name: str
    context_window: int
    prices: dict[str, float]
    batch_discount: float | None
    batch_accepted: bool
    source: str = ""
    as_of: str = ""
    provider: str = "xai"
    batch_prices: dict[str, float] | None = None
    long_context: LongContext | None = None


class _CatalogFieldError(ValueError):
    """One invalid field; turned into a JobSpecError that names file, model and field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def catalog_path(catalog: Path | None = None) -> Path:
    """The catalog file in use: `catalog` if given, else GROK_BATCH_CATALOG, else the builtin."""
    if catalog is not None:
        return Path(catalog)
    return Path(os.environ.get(CATALOG_ENV) or BUILTIN_CATALOG)


def load_catalog(path: Path | None = None) -> dict[str, ModelInfo]:
    """Every model of the catalog file (see `catalog_path`), checked.

    Cached per file version (path, mtime, size): a long-running worker sees an edited catalog
    without a restart, and millions of per-row lookups do not re-read the file.
    """
    resolved = catalog_path(path)
    label = str(resolved)
    if path is None and os.environ.get(CATALOG_ENV):
        label += f" (from {CATALOG_ENV})"
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise JobSpecError(f"model catalog {label} cannot be read: {exc.strerror or exc}") from None
    return _load(str(resolved), stat.st_mtime_ns, stat.st_size, label)


@lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int, label: str) -> dict[str, ModelInfo]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSpecError(f"model catalog {label} cannot be read: {exc}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"model catalog {label} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise JobSpecError(f"model catalog {label} must be a mapping with a `models:` mapping of model names")
    models: dict[str, ModelInfo] = {}
    for name, fields in data["models"].items():
        if not isinstance(name, str) or not name:
            raise JobSpecError(f"model catalog {label}: model name {name!r} must be a non-empty string")
        try:
            models[name] = _model(name, fields)
        except _CatalogFieldError as exc:
            raise JobSpecError(
                f"model catalog {label}: model {name!r}, field `{exc.field}`: {exc.problem}"
            ) from None
    return models


def _model(name: str, fields: Any) -> ModelInfo:
    if not isinstance(fields, dict):
        raise _CatalogFieldError("(entry)", f"must be a mapping of fields, not {type(fields).__name__}")
    unknown = sorted(str(key) for key in fields if key not in _REQUIRED + _OPTIONAL)
    if unknown:
        raise _CatalogFieldError(
            unknown[0], "unknown field (allowed: " + ", ".join(_REQUIRED + _OPTIONAL) + ")"
        )
    for key in _REQUIRED:
        if key not in fields:
            raise _CatalogFieldError(key, "missing (required: " + ", ".join(_REQUIRED) + ")")
    provider = fields["provider"]
    if provider not in PROVIDERS:
        raise _CatalogFieldError("provider", f"{provider!r} is not one of {', '.join(PROVIDERS)}")
    context_window = fields["context_window"]
    if not isinstance(context_window, int) or isinstance(context_window, bool) or context_window <= 0:
        raise _CatalogFieldError(
            "context_window", f"must be a positive whole number of tokens, not {context_window!r}"
        )
    if not isinstance(fields["batch_accepted"], bool):
        raise _CatalogFieldError("batch_accepted", f"must be true or false, not {fields['batch_accepted']!r}")
    prices = _prices("prices", fields["prices"])
    has_discount = fields.get("batch_discount") is not None
    has_batch_prices = fields.get("batch_prices") is not None
    if has_discount == has_batch_prices:
        raise _CatalogFieldError(
            "batch_discount",
            "give exactly one of batch_discount (fraction off every token type) or batch_prices",
        )
    discount: float | None = None
    batch_prices: dict[str, float] | None = None
    if has_discount:
        discount = _number("batch_discount", fields["batch_discount"])
        if not 0 <= discount < 1:
            raise _CatalogFieldError("batch_discount", f"must be a fraction in [0, 1), not {discount!r}")
    else:
        batch_prices = _prices("batch_prices", fields["batch_prices"])
    return ModelInfo(
        name=name,
        context_window=context_window,
        prices=prices,
        batch_discount=discount,
        batch_accepted=fields["batch_accepted"],
        source=_text("source", fields.get("source")),
        as_of=_text("as_of", fields.get("as_of")),
        provider=provider,
        batch_prices=batch_prices,
        long_context=_long_context(fields.get("long_context")),
    )


def _long_context(value: Any) -> LongContext | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _CatalogFieldError("long_context", "must be a mapping {threshold, prices}")
    unknown = sorted(str(key) for key in value if key not in _LONG_KEYS)
    if unknown:
        raise _CatalogFieldError(
            f"long_context.{unknown[0]}", "unknown field (allowed: " + ", ".join(_LONG_KEYS) + ")"
        )
    for key in ("threshold", "prices"):
        if key not in value:
            raise _CatalogFieldError(f"long_context.{key}", "missing")
    threshold = value["threshold"]
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
        raise _CatalogFieldError(
            "long_context.threshold", f"must be a positive number of prompt tokens, not {threshold!r}"
        )
    batch = value.get("batch_prices")
    return LongContext(
        threshold=threshold,
        prices=_prices("long_context.prices", value["prices"]),
        batch_prices=None if batch is None else _prices("long_context.batch_prices", batch),
    )


def _prices(field: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _CatalogFieldError(
            field, "must be a mapping {input, cached_input, output} in USD per 1M tokens"
        )
    unknown = sorted(str(key) for key in value if key not in PRICE_KEYS)
    if unknown:
        raise _CatalogFieldError(
            f"{field}.{unknown[0]}", "unknown price (allowed: " + ", ".join(PRICE_KEYS) + ")"
        )
    prices: dict[str, float] = {}
    for key in PRICE_KEYS:
        if key not in value:
            raise _CatalogFieldError(f"{field}.{key}", "missing")
        price = _number(f"{field}.{key}", value[key])
        if price < 0:
            raise _CatalogFieldError(f"{field}.{key}", f"a price cannot be negative ({price!r})")
        prices[key] = price
    return prices


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _CatalogFieldError(field, f"must be a number, not {value!r}")
    return float(value)


def _text(field: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.date):  # an unquoted `as_of: 2026-08-01` reads as a date
        return value.isoformat()
    if not isinstance(value, str):
        raise _CatalogFieldError(field, f"must be text, not {value!r}")
    return value


def model_info(model: str, catalog: Path | None = None) -> ModelInfo | None:
    """What the catalog knows of `model`, or None for a model it does not list."""
    return load_catalog(catalog).get(model)


def check_batch_model(
    model: str, catalog: Path | None = None, provider: str = "xai", base_url: str | None = None
) -> str | None:
    """Refuse a model the provider's batch endpoint is known to reject (it would sink every
    batch, with only `cancel_by_xai_message` to tell); return a warning for a model the catalog
    lacks, or lists under another provider while the job talks to that provider's own service
    (`base_url` resolved as the provider does: the job's, the environment's, the default):
    the catalog cannot speak for that endpoint. An OpenAI-compatible gateway that serves xAI's
    models (provider openai, another host) is not warned about."""
    models = load_catalog(catalog)
    info = models.get(model)
    if info is None:
        return (
            f"model {model!r} is not in the model catalog ({catalog_path(catalog)}); the batch endpoint "
            "may reject it, which fails the whole file, and costs cannot be estimated before sending"
        )
    if info.provider != provider:
        if not is_default_service(provider, base_url):
            return None  # a gateway or self-hosted server: it says itself what it serves
        return (
            f"model {model!r} is listed for provider {info.provider!r} in the model catalog "
            f"({catalog_path(catalog)}), but the job uses provider {provider!r}; the batch endpoint may "
            "reject it, which fails the whole file"
        )
    if not info.batch_accepted:
        accepted = sorted(name for name, m in models.items() if m.batch_accepted and m.provider == provider)
        raise JobSpecError(
            f"field `model`: {model} is not accepted by the {_PROVIDER_NAMES.get(provider, provider)} "
            "batch endpoint "
            f"(catalog, as of {info.as_of}: {info.source}). Use `mode: sync` to send the rows "
            f"one by one, or a model the batch endpoint takes: {', '.join(accepted) or '(none listed)'}"
        )
    return None


def is_default_service(provider: str, base_url: str | None = None) -> bool:
    """Whether a job of `provider` talks to that provider's own service (its default host),
    rather than a gateway or a self-hosted server speaking its protocol."""
    endpoint = ENDPOINTS[provider]
    host = urlsplit(server_url(provider, base_url)).hostname
    return host is not None and host == urlsplit(endpoint.default_base_url).hostname
