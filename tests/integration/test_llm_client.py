"""OpenAIGenerator over real HTTP against the fake OpenAI server, through the official client."""

import asyncio
import time

import pytest

from core.generation.draft import EmailDraft
from core.generation.llm import LLMOutputError, LLMRejectedError, LLMTransientError, OpenAIGenerator
from core.generation.prompt import build_messages
from core.statuses import Pricing
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import PERSONAL_LINE

KEY = "sk-sentinel-KEY-0123456789"
MESSAGES = build_messages(
    "Book calls",
    "Be brief",
    EmailDraft(subject="Hi Sarah", body="Hello Sarah,\n\nA note."),
    {"firstName": "Sarah"},
    sender_name="Alex",
    link_allowlist=[],
)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(server):
    server.reset()
    server.configure(retry_after="0.05", timeout_hold_s=30.0, prompt_caching=False)


def generate(server, *, max_retries: int = 2, timeout: float = 5.0, **options):
    async def call():
        generator = OpenAIGenerator(
            api_key=KEY,
            base_url=server.base_url,
            max_retries=max_retries,
            timeout=timeout,
            **options,
        )
        try:
            return await generator.generate(MESSAGES, model="gpt-4o-mini")
        finally:
            await generator.aclose()

    return asyncio.run(call())


def test_a_draft_comes_back_parsed_with_tokens_and_cost(server):
    generation = generate(server)
    assert generation.draft.subject == "Hi Sarah"
    assert generation.draft.body.startswith(PERSONAL_LINE)
    assert generation.attempts == 1
    assert generation.prompt_tokens > 0 and generation.cost_usd > 0
    [record] = server.request_log()
    schema = record.body["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["strict"] is True


def test_cached_tokens_and_the_flex_tier_are_priced_at_their_own_rates(server):
    server.configure(prompt_caching=True)
    first, second = generate(server), generate(server)
    assert (first.cached_tokens, first.pricing) == (0, Pricing.standard)
    assert second.cached_tokens > 0  # the same system message: read from the prompt cache
    assert second.cost_usd < first.cost_usd
    assert second.cached_cost_usd == pytest.approx(second.cached_tokens * 0.075 / 1e6)
    flex = generate(server, service_tier="flex")
    assert server.request_log()[-1].body["service_tier"] == "flex"
    assert "service_tier" not in server.request_log()[0].body
    assert flex.pricing == Pricing.flex
    assert flex.cost_usd == pytest.approx(second.cost_usd / 2)


def test_a_429_is_retried_after_its_retry_after(server):
    server.configure(retry_after="0.4")
    server.script(["429", "ok"])
    started = time.monotonic()
    generation = generate(server)
    assert time.monotonic() - started >= 0.4
    assert generation.attempts == 2
    assert server.stats().requests == 2


def test_5xx_are_retried_with_backoff(server):
    server.script(["500", "503", "ok"])
    assert generate(server).attempts == 3


def test_retries_are_bounded_and_the_error_says_how_many(server):
    server.script(["429", "429", "429", "ok"])
    with pytest.raises(LLMTransientError) as excinfo:
        generate(server, max_retries=2)
    assert excinfo.value.attempts == 3
    assert server.stats().requests == 3
    assert KEY not in str(excinfo.value)


def test_a_400_is_not_retried(server):
    server.script(["400"])
    with pytest.raises(LLMRejectedError) as excinfo:
        generate(server)
    assert (excinfo.value.attempts, excinfo.value.status_code) == (1, 400)
    assert server.stats().requests == 1
    assert KEY not in str(excinfo.value)


@pytest.mark.parametrize("fault", ["malformed", "invalid"])
def test_unusable_output_is_not_retried(server, fault):
    server.script([fault])
    with pytest.raises(LLMOutputError):
        generate(server)
    assert server.stats().requests == 1


def test_a_timeout_is_retried_then_given_up(server):
    server.configure(timeout_hold_s=5.0)
    server.script(["timeout", "timeout"])
    with pytest.raises(LLMTransientError) as excinfo:
        generate(server, max_retries=1, timeout=0.3)
    assert excinfo.value.attempts == 2


def test_a_dropped_connection_is_retried(server):
    server.script(["connection_drop", "ok"])
    assert generate(server).attempts == 2
