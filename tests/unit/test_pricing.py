"""The price table: uncached, cached and output tokens at their own rates; batch and flex half."""

import pytest
from pydantic import ValidationError

from core.generation.pricing import DEFAULT_PRICES, ModelPrice, price_table, token_cost
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
    assert token_cost("some-local-model", prompt_tokens=10**6, completion_tokens=10**6) == 0.0


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
