"""Fixtures shared by the integration tests: one loopback SMTP server per module."""

from collections.abc import Iterator

import pytest

from tests.support.smtp_server import LoopbackSMTP


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[LoopbackSMTP]:
    with LoopbackSMTP() as server:
        yield server


@pytest.fixture
def smtp(smtp_server: LoopbackSMTP) -> LoopbackSMTP:
    smtp_server.reset_rules()
    smtp_server.clear()
    return smtp_server
