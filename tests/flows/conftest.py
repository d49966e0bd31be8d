"""Fixtures for the flow tests: a loopback SMTP server wired into the delivery settings, and
the fake OpenAI server wired into the generation settings (a test module may define its own
`llm`, with its own responder)."""

import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.smtp_server import LoopbackSMTP


@pytest.fixture
def llm(run_settings):
    with FakeOpenAI(record_bodies=True) as server:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=server.base_url)
        yield server


@pytest.fixture
def smtp(run_settings):
    with LoopbackSMTP() as server:
        run_settings.update(
            email_transport="smtp",
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="none",
            unsubscribe_secret="test-secret-at-least-16-chars",
            public_base_url="https://links.seller.example",
        )
        yield server
