"""Fixtures for the flow tests: a loopback SMTP server wired into the delivery settings."""

import pytest

from tests.support.smtp_server import LoopbackSMTP


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
