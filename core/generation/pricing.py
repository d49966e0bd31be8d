"""What a generation costs: a small price table per model, and the rate each call was billed at.

`DEFAULT_PRICES` are OpenAI's list prices in USD per 1M tokens for the standard tier
(https://openai.com/api/pricing/, as read in August 2025): uncached input, cached input (prompt
tokens the provider read from its prompt cache, `usage.prompt_tokens_details.cached_tokens`)
and output. The Batch API and the `flex` service tier bill every kind of token at half the
standard rate (`DISCOUNTED`). Prices change: `OPENAI_PRICES` (JSON, model -> {"input",
"cached_input", "output"}) overrides or adds models without a release. A dated snapshot
(`gpt-4o-mini-2024-07-18`) takes the price of its longest listed prefix. A model not listed has
no price: its cost is None (stored as NULL), unknown rather than guessed, and never 0.0, which
would count its calls as free; the campaign report leaves such emails out of its spend figures
and names the model, and each run warns once when the configured model has no price.
"""

from collections.abc import Mapping
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from core.statuses import Pricing


class ModelPrice(BaseModel):
    """USD per 1M tokens at the standard tier."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    output: float = Field(ge=0)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4o": ModelPrice(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4.1-nano": ModelPrice(input=0.10, cached_input=0.025, output=0.40),
    "gpt-4.1-mini": ModelPrice(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
    "gpt-5-nano": ModelPrice(input=0.05, cached_input=0.005, output=0.40),
    "gpt-5-mini": ModelPrice(input=0.25, cached_input=0.025, output=2.00),
    "gpt-5": ModelPrice(input=1.25, cached_input=0.125, output=10.00),
}

# Batch API and flex processing: half the standard rate for input, cached input and output.
DISCOUNTED = frozenset({Pricing.batch, Pricing.flex})
DISCOUNT = 0.5


def price_table(
    overrides: Mapping[str, ModelPrice | Mapping[str, float]] | None = None,
) -> dict[str, ModelPrice]:
    """The default table with the settings' overrides (and additions) applied; a bad entry is
    a ValidationError naming the model and the field."""
    table = dict(DEFAULT_PRICES)
    for model, price in (overrides or {}).items():
        table[model] = ModelPrice.model_validate(price)
    return table


def model_price(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of `model` or of its longest listed prefix (dated snapshots); None if unlisted."""
    matches = [name for name in prices if model == name or model.startswith(f"{name}-")]
    return prices[max(matches, key=len)] if matches else None


def token_cost(
    model: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    pricing: Pricing = Pricing.standard,
    prices: Mapping[str, ModelPrice] = DEFAULT_PRICES,
) -> float | None:
    """USD for one call: uncached input, cached input and output at their own rates; None
    when the model has no price."""
    price = model_price(model, prices)
    if price is None:
        return None
    cached = min(max(cached_tokens, 0), prompt_tokens)
    standard = (
        (prompt_tokens - cached) * price.input
        + cached * price.cached_input
        + completion_tokens * price.output
    ) / 1_000_000
    return standard * DISCOUNT if pricing in DISCOUNTED else standard


def cost_column(usd: float | None) -> Decimal | None:
    """A cost as `costUsd` stores it: NUMERIC(12, 6), and NULL when unknown."""
    return None if usd is None else Decimal(str(round(usd, 6)))


def unpriced_warning(model: str, prices: Mapping[str, ModelPrice]) -> str | None:
    """What a run warns once when its configured model has no price, else None."""
    if model_price(model, prices) is not None:
        return None
    return (
        f"OPENAI_MODEL {model!r} has no price in core/generation/pricing.py nor in"
        " OPENAI_PRICES: its calls are recorded with an unknown cost (costUsd NULL) and left"
        " out of the campaign report's spend; add it to OPENAI_PRICES (JSON, USD per 1M"
        f' tokens: {{"{model}": {{"input": ..., "cached_input": ..., "output": ...}}}})'
    )
