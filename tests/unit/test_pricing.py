"""The price table: uncached, cached and output tokens at their own rates; batch and flex half."""

from decimal import Decimal

import pytest
from pydantic import SecretStr, ValidationError

from core.generation.config import GenerationConfig
from core.generation.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    cost_column,
    price_table,
    token_cost,
)
from core.statuses import Pricing


def test_standard_rates_per_million_tokens_by_longest_prefix():
    assert token_cost("gpt-4o-mini", prompt_tokens=1_000_000, completion_tokens=1_000_000) == (
        pytest.approx(0.75)
    )
    assert token_cost(
        "gpt-4o-mini-2024-07-18", prompt_tokens=2_000_000, completion_tokens=0
    ) == pytest.approx(0.30)
    # gpt-4.1-mini, not gpt-4.1: the longest listed prefix wins.
    assert token_cost("gpt-4.1-mini-2025-04-14", prompt_tokens=0, completion_tokens=10**6) == (
        pytest.approx(1.60)
    )
    # Unknown, not free: a model with no price has no cost, and none is ever stored as 0.
    assert token_cost("some-local-model", prompt_tokens=10**6, completion_tokens=10**6) is None
    assert cost_column(None) is None
    assert cost_column(0.0000125) == Decimal("0.000013")


def test_cached_tokens_are_billed_at_the_cached_rate_and_batch_at_half():
    # 1,000 prompt tokens of which 600 cached, 200 output, gpt-4o-mini:
    # 400 * 0.15 + 600 * 0.075 + 200 * 0.60 = 60 + 45 + 120 = 225 per 1M -> 0.000225 USD.
    standard = token_cost(
        "gpt-4o-mini", prompt_tokens=1000, cached_tokens=600, completion_tokens=200
    )
    assert standard == pytest.approx(0.000225)
    for half in (Pricing.batch, Pricing.flex):
        assert token_cost(
            "gpt-4o-mini",
            prompt_tokens=1000,
            cached_tokens=600,
            completion_tokens=200,
            pricing=half,
        ) == pytest.approx(0.0001125)
    # More cached than prompt tokens (a provider bug) never makes a cost negative.
    assert token_cost("gpt-4o-mini", prompt_tokens=10, cached_tokens=50, completion_tokens=0) > 0


def test_settings_override_and_add_models():
    table = price_table({"gpt-4o-mini": {"input": 1, "cached_input": 0.5, "output": 2}})
    assert table["gpt-4o-mini"] == ModelPrice(input=1, cached_input=0.5, output=2)
    assert table["gpt-4o"] == DEFAULT_PRICES["gpt-4o"]
    with pytest.raises(ValidationError, match="cached_input"):
        price_table({"mine": {"input": 1, "output": 2}})


def test_a_model_with_no_price_is_named_once_with_the_setting_to_fix_it():
    key = SecretStr("sk-test-not-real")
    unpriced = GenerationConfig(model="gpt-9-turbo", api_key=key)
    warning = unpriced.unpriced_warning()
    assert warning is not None
    assert "'gpt-9-turbo'" in warning and "OPENAI_PRICES" in warning and "costUsd NULL" in warning
    # A listed model (or a dated snapshot of one), a price added in settings, and the offline
    # template (free, never an LLM call) warn of nothing.
    assert GenerationConfig(model="gpt-4o-mini-2024-07-18", api_key=key).unpriced_warning() is None
    added = price_table({"gpt-9-turbo": {"input": 1, "cached_input": 0.5, "output": 2}})
    assert (
        GenerationConfig(model="gpt-9-turbo", api_key=key, prices=added).unpriced_warning() is None
    )
    assert GenerationConfig(model="gpt-9-turbo").unpriced_warning() is None
