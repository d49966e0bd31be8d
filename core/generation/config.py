"""What a generation run needs from the settings, read once at the edge and passed to its tasks."""

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, SecretStr

from core.generation.llm import TEMPLATE_MODEL, OpenAIGenerator, TemplateGenerator
from core.generation.pricing import ModelPrice, price_table, unpriced_warning
from core.settings import Settings


class GenerationConfig(BaseModel):
    """The LLM a run talks to, how hard it may push it, and how long a claim or a lead may wait."""

    model_config = ConfigDict(frozen=True)

    model: str
    base_url: str | None = None
    # Secret: task inputs can reach logs and run states. None is offline: the template writes
    # every draft, and nothing is worth caching.
    api_key: SecretStr | None = None
    max_concurrency: int = 64
    timeout_seconds: float = 30.0
    max_retries: int = 4
    rate_limit_name: str | None = None
    claim_lease: timedelta = timedelta(seconds=600)
    max_attempts: int = 8
    service_tier: str | None = None
    prices: dict[str, ModelPrice] = price_table()

    @classmethod
    def from_settings(cls, settings: Settings) -> "GenerationConfig":
        """The run's generation settings; without a key the model is the offline template."""
        key = settings.openai_api_key
        return cls(
            model=TEMPLATE_MODEL if key is None else settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=key,
            max_concurrency=settings.llm_max_concurrency,
            timeout_seconds=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            rate_limit_name=settings.llm_rate_limit_name,
            claim_lease=timedelta(seconds=settings.claim_lease_seconds),
            max_attempts=settings.max_generation_attempts,
            service_tier=settings.openai_service_tier,
            prices=price_table(settings.openai_prices),
        )

    def unpriced_warning(self) -> str | None:
        """The warning a run logs once when its model has no price; None offline (the
        template costs nothing) and for a priced model."""
        return None if self.api_key is None else unpriced_warning(self.model, self.prices)

    def open_generator(self) -> OpenAIGenerator | TemplateGenerator:
        """The LLM client, or the offline template without a key; `aclose()` an OpenAIGenerator."""
        if self.api_key is None:
            return TemplateGenerator()
        return OpenAIGenerator(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
            service_tier=self.service_tier,
            prices=self.prices,
        )
