"""Fixtures shared by the integration tests: one loopback SMTP server per module, and the web
app under real uvicorn."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
from fastapi import FastAPI

from tests.support.smtp_server import LoopbackSMTP
from tests.support.web_server import serving


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[LoopbackSMTP]:
    with LoopbackSMTP() as server:
        yield server


@pytest.fixture
def smtp(smtp_server: LoopbackSMTP) -> LoopbackSMTP:
    smtp_server.reset_rules()
    smtp_server.clear()
    return smtp_server


@pytest.fixture
def serve() -> Callable[[FastAPI], AbstractContextManager[httpx.Client]]:
    """`with serve(app) as client:` runs the app under uvicorn for the block."""
    return serving
