"""Usage semantics, cost arithmetic and the catalog behind them.

Expected costs are worked out by hand in the comments and written as literal numbers, so a
slip in the formula cannot hide behind the same formula in the test.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from emulator.completions import MODEL_PRICES, billed_ticks
from tasks.infra.errors import JobSpecError
from tasks.money.catalog import (
    BUILTIN_CATALOG,
    check_batch_model,
    is_default_service,
    load_catalog,
    model_info,
)
from tasks.money.pricing import (
    TICK_USD,
    Prices,
    PriceSheet,
    Usage,
    cost_column,
    cost_usd,
    costs_disagree,
    estimate_cost,
    price_sheet,
    ticks_to_usd,
)

# The usage object of the xAI reference result (§2.1): 706 prompt (679 cached), 22 visible
# completion, 99 reasoning, 827 total.
XAI_USAGE = {
    "prompt_tokens": 706,
    "completion_tokens": 22,
    "total_tokens": 827,
    "prompt_tokens_details": {"text_tokens": 706, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 679},
    "completion_tokens_details": {"reasoning_tokens": 99, "audio_tokens": 0},
    "num_sources_used": 0,
    "cost_in_usd_ticks": 4_720_500,
}
# The same tokens as OpenAI reports them: completion_tokens includes the reasoning.
OPENAI_USAGE = {
    "prompt_tokens": 706,
    "completion_tokens": 121,
    "total_tokens": 827,
    "prompt_tokens_details": {"cached_tokens": 679},
    "completion_tokens_details": {"reasoning_tokens": 99},
}
REFERENCE = Usage(prompt_tokens=706, cached_tokens=679, output_tokens=22, reasoning_tokens=99)


def sheet(model: str) -> PriceSheet:
    found = price_sheet(model)
    assert found is not None, model
    return found


# -- usage ---------------------------------------------------------------------------------
def test_xai_usage_excludes_reasoning_from_completion() -> None:
    assert Usage.from_xai(XAI_USAGE) == REFERENCE


def test_openai_usage_includes_reasoning_in_completion() -> None:
    assert Usage.from_openai(OPENAI_USAGE) == REFERENCE


def test_missing_usage_fields_read_zero() -> None:
    assert Usage.from_xai(None) == Usage(0, 0, 0, 0)
    assert Usage.from_xai({"prompt_tokens": 10, "completion_tokens": 5}) == Usage(10, 0, 5, 0)
    assert Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 5}) == Usage(10, 0, 5, 0)
    nulls = {"prompt_tokens": 10, "completion_tokens": None, "prompt_tokens_details": None}
    assert Usage.from_xai(nulls) == Usage(10, 0, 0, 0)


def test_responses_api_field_names() -> None:
    responses = {
        "input_tokens": 706,
        "input_tokens_details": {"cached_tokens": 679},
        "output_tokens": 121,
        "output_tokens_details": {"reasoning_tokens": 99},
    }
    assert Usage.from_openai(responses) == REFERENCE


# -- cost of one request -------------------------------------------------------------------
def test_grok_4_3_standard_and_batch() -> None:
    # Billed: 706 - 679 = 27 uncached, 679 cached, 22 + 99 = 121 output.
    # Standard $1.25 / $0.20 / $2.50: 27*1.25 + 679*0.20 + 121*2.50 = 33.75 + 135.80 + 302.50
    #   = 472.05 per 1M -> $0.00047205.
    assert cost_usd(REFERENCE, sheet("grok-4.3"), batch=False) == pytest.approx(0.00047205, rel=1e-12)
    # Batch, 20% off: $1.00 / $0.16 / $2.00: 27*1.00 + 679*0.16 + 121*2.00 = 27 + 108.64 + 242
    #   = 377.64 per 1M -> $0.00037764.
    assert cost_usd(REFERENCE, sheet("grok-4.3"), batch=True) == pytest.approx(0.00037764, rel=1e-12)


def test_both_usage_shapes_cost_the_same() -> None:
    grok = sheet("grok-4.3")
    assert cost_usd(Usage.from_openai(OPENAI_USAGE), grok, batch=True) == cost_usd(
        Usage.from_xai(XAI_USAGE), grok, batch=True
    )


def test_grok_4_3_batch_prices_are_20_percent_off() -> None:
    grok = sheet("grok-4.3")
    assert grok.batch == Prices(input=1.00, cached_input=0.16, output=2.00)
    assert grok.long_batch == Prices(input=2.00, cached_input=0.32, output=4.00)


def test_model_without_batch_discount_costs_the_same_in_batch() -> None:
    # $0.20 / $0.05 / $0.50: 27*0.20 + 679*0.05 + 121*0.50 = 5.40 + 33.95 + 60.50 = 99.85 per 1M.
    fast = sheet("grok-4-1-fast-reasoning")
    assert cost_usd(REFERENCE, fast, batch=False) == pytest.approx(0.00009985, rel=1e-12)
    assert cost_usd(REFERENCE, fast, batch=True) == pytest.approx(0.00009985, rel=1e-12)


def test_openai_model_at_half_price_in_batch() -> None:
    # gpt-4.1-mini $0.40 / $0.10 / $1.60: 27*0.40 + 679*0.10 + 121*1.60 = 10.80 + 67.90 + 193.60
    #   = 272.30 per 1M; batch (50% off) = 136.15 per 1M.
    mini = sheet("gpt-4.1-mini")
    assert mini.provider == "openai"
    assert cost_usd(REFERENCE, mini, batch=False) == pytest.approx(0.0002723, rel=1e-12)
    assert cost_usd(REFERENCE, mini, batch=True) == pytest.approx(0.00013615, rel=1e-12)


def test_long_context_tier() -> None:
    grok = sheet("grok-4.3")
    long_usage = Usage(
        prompt_tokens=250_000, cached_tokens=200_000, output_tokens=1_000, reasoning_tokens=3_000
    )
    # >= 200k prompt tokens: $2.50 / $0.40 / $5.00 for the whole request:
    #   50,000*2.50 + 200,000*0.40 + 4,000*5.00 = 125,000 + 80,000 + 20,000 = 225,000 per 1M.
    assert cost_usd(long_usage, grok, batch=False) == pytest.approx(0.225, rel=1e-12)
    # Batch, 20% off: $2.00 / $0.32 / $4.00: 100,000 + 64,000 + 16,000 = 180,000 per 1M.
    assert cost_usd(long_usage, grok, batch=True) == pytest.approx(0.18, rel=1e-12)
    # The boundary: 199,999 uncached tokens at $1.25; 200,000 at $2.50.
    assert cost_usd(Usage(199_999, 0, 0, 0), grok, batch=False) == pytest.approx(0.24999875, rel=1e-12)
    assert cost_usd(Usage(200_000, 0, 0, 0), grok, batch=False) == pytest.approx(0.5, rel=1e-12)


def test_estimate_is_per_row() -> None:
    grok = sheet("grok-4.3")
    # 1,000 rows of 500 in / 200 out. Batch: 500*1.00 + 200*2.00 = 900 per 1M per row -> $0.90.
    assert estimate_cost(1_000, 500, 200, grok, batch=True) == pytest.approx(0.9, rel=1e-12)
    # Standard: 500*1.25 + 200*2.50 = 1,125 per 1M per row -> $1.125.
    assert estimate_cost(1_000, 500, 200, grok, batch=False) == pytest.approx(1.125, rel=1e-12)
    # 10 rows of 300k prompt tokens hit the long tier: 300,000*2.50 = 750,000 per 1M -> $7.50.
    assert estimate_cost(10, 300_000, 0, grok, batch=False) == pytest.approx(7.5, rel=1e-12)


def test_ticks() -> None:
    assert TICK_USD == 1e-10
    assert ticks_to_usd(12_345_000) == pytest.approx(0.0012345, rel=1e-15)
    assert ticks_to_usd(4_720_500) == pytest.approx(0.00047205, rel=1e-15)
    assert ticks_to_usd(None) is None


def test_costs_disagree() -> None:
    assert not costs_disagree(0.00047205, 0.00047205)
    assert not costs_disagree(100.0, 100.5)  # 0.5% apart
    assert costs_disagree(100.0, 80.0)  # the batch discount applied on one side only
    assert costs_disagree(0.00047205, 0.00037764, abs_floor=0.0)
    assert not costs_disagree(2e-9, 1e-9)  # a tick or two apart: under the absolute floor
    assert costs_disagree(float("nan"), 1.0)


# -- cost of a column ----------------------------------------------------------------------
def test_cost_column_matches_cost_usd_row_by_row() -> None:
    rng = random.Random(20261)
    rows = []
    for _ in range(400):
        prompt = rng.choice([None, rng.randint(0, 5_000), rng.randint(150_000, 400_000)])
        cached = rng.choice([None, 0, rng.randint(0, 300_000)])  # sometimes more than the prompt
        output = rng.choice([None, rng.randint(0, 4_000)])
        reasoning = rng.choice([None, 0, rng.randint(0, 20_000)])
        rows.append((prompt, cached, output, reasoning))
    columns = [pa.array([row[i] for row in rows], type=pa.int64()) for i in range(4)]
    for model in ("grok-4.3", "grok-4-1-fast-reasoning", "gpt-4o-mini"):
        for batch in (False, True):
            price = sheet(model)
            got = cost_column(columns[0], columns[1], columns[2], columns[3], price, batch=batch)
            assert got.type == pa.float64()
            for (prompt, cached, output, reasoning), value in zip(rows, got.to_pylist(), strict=True):
                if prompt is None or output is None:
                    assert value is None
                else:
                    usage = Usage(prompt, cached or 0, output, reasoning or 0)
                    assert value == cost_usd(usage, price, batch=batch)


def test_cost_column_literal_and_chunked() -> None:
    grok = sheet("grok-4.3")
    chunked = [pa.chunked_array([[706], [None]], type=pa.int64()) for _ in range(4)]
    chunked[1] = pa.chunked_array([[679], [5]], type=pa.int64())
    chunked[2] = pa.chunked_array([[22], [5]], type=pa.int64())
    chunked[3] = pa.chunked_array([[99], [None]], type=pa.int64())
    got = cost_column(chunked[0], chunked[1], chunked[2], chunked[3], grok, batch=True)
    assert got.to_pylist()[0] == pytest.approx(0.00037764, rel=1e-12)
    assert got.to_pylist()[1] is None


# -- the catalog ---------------------------------------------------------------------------
def test_builtin_catalog_is_complete() -> None:
    models = load_catalog(BUILTIN_CATALOG)
    for name in (
        "grok-4.3",
        "grok-4.20-0309-reasoning",
        "grok-4.20-0309-non-reasoning",
        "grok-4.5",
        "grok-4.6",
        "grok-4.7",
        "grok-4-1-fast-reasoning",
        "grok-4-1-fast-non-reasoning",
        "grok-4-fast-reasoning",
        "grok-3",
        "grok-3-mini",
        "grok-code-fast-1",
        "gpt-4o-mini",
        "gpt-4.1-mini",
        "gpt-4.1",
        "gpt-4o",
    ):
        assert name in models, name
    for info in models.values():
        assert info.source and info.as_of, info.name
        assert info.provider in ("xai", "openai")
    assert models["grok-4.20-0309-reasoning"].long_context is not None
    assert models["grok-4.3"].context_window == 1_000_000


def test_existing_catalog_api_still_works() -> None:
    info = model_info("grok-4.3")
    assert info is not None and info.batch_accepted and info.batch_discount == 0.20
    assert model_info("no-such-model") is None
    assert check_batch_model("grok-4.3") is None
    assert "not in the model catalog" in (check_batch_model("no-such-model") or "")


def test_refused_model_suggests_sync_or_an_accepted_model() -> None:
    with pytest.raises(JobSpecError, match=r"grok-4\.5 is not accepted") as info:
        check_batch_model("grok-4.5")
    message = str(info.value)
    assert "mode: sync" in message and "grok-4.3" in message and "gpt-4o" not in message


def test_model_of_another_provider_is_a_warning() -> None:
    assert "provider 'openai'" in (check_batch_model("gpt-4o", provider="xai") or "")
    assert check_batch_model("gpt-4o", provider="openai") is None


def test_model_of_another_provider_is_a_warning_only_at_that_providers_own_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("XAI_BASE_URL", raising=False)
    # grok-4.3 sent to OpenAI itself: OpenAI's batch endpoint will refuse it
    for url in (None, "https://api.openai.com/v1", "https://api.openai.com"):
        warning = check_batch_model("grok-4.3", provider="openai", base_url=url) or ""
        assert "listed for provider 'xai'" in warning and "provider 'openai'" in warning, url
    assert is_default_service("openai") and is_default_service("xai", "https://api.x.ai/v1/")
    # an OpenAI-compatible gateway or self-hosted server serving grok-4.3: nothing to warn about
    for url in ("http://127.0.0.1:8000/openai/v1", "https://gateway.example.com/v1"):
        assert check_batch_model("grok-4.3", provider="openai", base_url=url) is None, url
        assert not is_default_service("openai", url)
    assert check_batch_model("gpt-4o", provider="xai", base_url="http://127.0.0.1:8000/v1") is None
    # the server comes from the environment when the job names none, as the provider's does
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/openai/v1")
    assert check_batch_model("grok-4.3", provider="openai") is None
    assert check_batch_model("grok-4.3", provider="openai", base_url="https://api.openai.com/v1")
    # what the catalog knows of the model's own provider is still checked wherever it is served
    assert "not in the model catalog" in (
        check_batch_model("no-such-model", provider="openai", base_url="https://gateway.example.com/v1") or ""
    )
    with pytest.raises(JobSpecError, match=r"grok-4\.5 is not accepted"):
        check_batch_model("grok-4.5", provider="xai", base_url="http://127.0.0.1:8000/v1")


def test_the_emulator_bills_what_the_catalog_says_xai_bills() -> None:
    """The emulator mirrors the catalog's xAI prices (it may not import the product): every
    xAI model of the catalog has the same standard prices, batch discount and long-context
    tier there, and its ticks equal our cost arithmetic in both modes."""
    xai_models = {
        name: info for name, info in load_catalog(BUILTIN_CATALOG).items() if info.provider == "xai"
    }
    assert set(MODEL_PRICES) == set(xai_models)
    for name, info in xai_models.items():
        emulated = MODEL_PRICES[name]
        assert (emulated.input, emulated.cached_input, emulated.output) == (
            info.prices["input"],
            info.prices["cached_input"],
            info.prices["output"],
        ), name
        assert info.batch_prices is None and emulated.batch_discount == info.batch_discount, name
        long = info.long_context
        assert (emulated.long_threshold, emulated.long) == (
            (None, None)
            if long is None
            else (long.threshold, (long.prices["input"], long.prices["cached_input"], long.prices["output"]))
        ), name
        for usage in (REFERENCE, Usage(250_000, 1_000, 2_000, 500)):
            for batch in (False, True):
                ticks = billed_ticks(
                    name,
                    usage.prompt_tokens,
                    usage.cached_tokens,
                    usage.output_tokens + usage.reasoning_tokens,
                    batch=batch,
                )
                ours = cost_usd(usage, sheet(name), batch=batch)
                assert ticks * TICK_USD == pytest.approx(ours, abs=TICK_USD), (name, usage, batch)
    # grok-4.3 by hand, the reference usage: standard 0.00047205 (see above), batch 20% off
    assert billed_ticks("grok-4.3", 706, 679, 121, batch=False) == 4_720_500
    assert billed_ticks("grok-4.3", 706, 679, 121, batch=True) == 3_776_400
    assert billed_ticks("grok-4-1-fast-reasoning", 706, 679, 121, batch=True) == billed_ticks(
        "grok-4-1-fast-reasoning", 706, 679, 121, batch=False
    )
    assert billed_ticks("grok-4.3", 706, 679, 121, batch=True, bill_factor=1.3) == round(1.3 * 3_776_400)


CUSTOM = """
models:
  acme-1:
    provider: openai
    context_window: 8000
    prices: {input: 1.00, cached_input: 0.50, output: 2.00}
    batch_prices: {input: 0.60, cached_input: 0.30, output: 1.00}
    long_context:
      threshold: 4000
      prices: {input: 2.00, cached_input: 1.00, output: 4.00}
    batch_accepted: true
    source: "test"
    as_of: 2026-11-01
"""


def test_explicit_path_and_batch_prices(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    acme = price_sheet("acme-1", path)
    assert acme is not None and price_sheet("grok-4.3", path) is None
    assert acme.as_of == "2026-11-01"
    usage = Usage(prompt_tokens=1_000, cached_tokens=400, output_tokens=100, reasoning_tokens=0)
    # Batch: 600*0.60 + 400*0.30 + 100*1.00 = 360 + 120 + 100 = 580 per 1M.
    assert cost_usd(usage, acme, batch=True) == pytest.approx(0.00058, rel=1e-12)
    # Long batch takes the same cut per token type (0.6, 0.6, 0.5): $1.20 / $0.60 / $2.00.
    long_usage = Usage(prompt_tokens=5_000, cached_tokens=0, output_tokens=1_000, reasoning_tokens=0)
    # 5,000*1.20 + 1,000*2.00 = 6,000 + 2,000 = 8,000 per 1M.
    assert cost_usd(long_usage, acme, batch=True) == pytest.approx(0.008, rel=1e-12)


def test_env_override_and_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    monkeypatch.setenv("GROK_BATCH_CATALOG", str(path))
    assert model_info("acme-1") is not None
    assert model_info("grok-4.3") is None
    assert price_sheet("acme-1") is not None
    assert model_info("grok-4.3", BUILTIN_CATALOG) is not None  # an explicit path beats the env


def test_edited_catalog_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    assert model_info("acme-1", path) is not None
    path.write_text(CUSTOM.replace("acme-1", "acme-2") + "\n")  # new size: a new cache entry
    assert model_info("acme-1", path) is None and model_info("acme-2", path) is not None


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("input: 1.00,", "input: -1.00,"), "prices.input"),
        (("    context_window: 8000\n", ""), "context_window"),
        (("provider: openai", "provider: acme"), "provider"),
        (("    batch_prices: {input: 0.60, cached_input: 0.30, output: 1.00}\n", ""), "batch_discount"),
        (
            ("batch_prices: {input: 0.60, cached_input: 0.30, output: 1.00}", "batch_discount: 1.0"),
            "batch_discount",
        ),
        (
            ("batch_prices: {input: 0.60, cached_input: 0.30, output: 1.00}", "batch_discount: -0.1"),
            "batch_discount",
        ),
        (("cached_input: 0.30, ", ""), "batch_prices.cached_input"),
        (("threshold: 4000", "threshold: 0"), "long_context.threshold"),
        (("batch_accepted: true", "batch_accepted: yes please"), "batch_accepted"),
        (("source:", "sauce:"), "sauce"),
    ],
)
def test_invalid_catalog_names_file_model_and_field(
    tmp_path: Path, edit: tuple[str, str], field: str
) -> None:
    path = tmp_path / "bad.yaml"
    assert edit[0] in CUSTOM
    path.write_text(CUSTOM.replace(*edit))
    with pytest.raises(JobSpecError) as info:
        load_catalog(path)
    message = str(info.value)
    assert str(path) in message and "'acme-1'" in message and f"`{field}`" in message


def test_bad_yaml_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  acme-1: {provider: [\n")
    with pytest.raises(JobSpecError, match="not valid YAML") as info:
        price_sheet("acme-1", path)
    assert str(path) in str(info.value)
    monkeypatch.setenv("GROK_BATCH_CATALOG", str(path))
    with pytest.raises(JobSpecError, match="GROK_BATCH_CATALOG"):
        model_info("acme-1")
    with pytest.raises(JobSpecError, match="cannot be read"):
        load_catalog(tmp_path / "missing.yaml")
