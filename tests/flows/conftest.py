"""Fixtures for the flow tests: a loopback SMTP server wired into the delivery settings."""

import pytest

from tests.support.smtp_server import LoopbackSMTP


@pytest.fixture
def smtp(pipeline_env):
    with LoopbackSMTP() as server:
        pipeline_env.setenv("EMAIL_TRANSPORT", "smtp")
        pipeline_env.setenv("SMTP_HOST", server.host)
        pipeline_env.setenv("SMTP_PORT", str(server.port))
        pipeline_env.setenv("SMTP_SECURITY", "none")
        pipeline_env.setenv("UNSUBSCRIBE_SECRET", "test-secret-at-least-16-chars")
        pipeline_env.setenv("PUBLIC_BASE_URL", "https://links.seller.example")
        yield server
