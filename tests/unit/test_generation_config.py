"""A generation run's config, built from the settings once at the edge."""

from datetime import timedelta

from pydantic import SecretStr

from core.generation.config import GenerationConfig
from core.generation.llm import TEMPLATE_MODEL
from core.settings import Settings

KEY = "sk-config-test-never-shown"


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
    }


def test_the_key_never_shows_in_its_text_or_json():
    config = GenerationConfig.from_settings(settings(openai_api_key=KEY))
    for shown in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert KEY not in shown
