"""A generation run's config, built from the settings once at the edge."""

from datetime import timedelta

from pydantic import SecretStr

from core.generation.config import GenerationConfig
from core.generation.llm import TEMPLATE_MODEL
from core.generation.pricing import DEFAULT_PRICES
from core.settings import Settings

KEY = "sk-config-test-never-shown"
DEFAULT_DUMP = {model: price.model_dump() for model, price in DEFAULT_PRICES.items()}


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_without_a_key_the_run_is_offline_with_the_template_model():
    config = GenerationConfig.from_settings(settings(openai_api_key=None, openai_model="gpt-x"))
    assert (config.api_key, config.model) == (None, TEMPLATE_MODEL)


def test_every_generation_setting_is_carried():
    config = GenerationConfig.from_settings(
        settings(
            openai_api_key=KEY,
            openai_model="gpt-x",
            openai_base_url="http://llm.example/v1",
            llm_max_concurrency=7,
            llm_timeout_seconds=2.5,
            llm_max_retries=1,
            llm_rate_limit_name="rpm",
            claim_lease_seconds=90,
            max_generation_attempts=3,
            openai_service_tier="flex",
            openai_prices={"mine": {"input": 1, "cached_input": 0.5, "output": 2}},
        )
    )
    assert config.api_key == SecretStr(KEY)
    assert config.model_dump(exclude={"api_key"}) == {
        "model": "gpt-x",
        "base_url": "http://llm.example/v1",
        "max_concurrency": 7,
        "timeout_seconds": 2.5,
        "max_retries": 1,
        "rate_limit_name": "rpm",
        "claim_lease": timedelta(seconds=90),
        "max_attempts": 3,
        "service_tier": "flex",
        "prices": {**DEFAULT_DUMP, "mine": {"input": 1.0, "cached_input": 0.5, "output": 2.0}},
    }


def test_the_key_never_shows_in_its_text_or_json():
    config = GenerationConfig.from_settings(settings(openai_api_key=KEY))
    for shown in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert KEY not in shown
