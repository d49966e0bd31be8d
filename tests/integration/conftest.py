"""Fixtures shared by the integration tests: one loopback SMTP server per module, and the web
app under real uvicorn."""

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.support.smtp_server import LoopbackSMTP
from web.app import RedactTokens


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[LoopbackSMTP]:
    with LoopbackSMTP() as server:
        yield server


@pytest.fixture
def smtp(smtp_server: LoopbackSMTP) -> LoopbackSMTP:
    smtp_server.reset_rules()
    smtp_server.clear()
    return smtp_server


@contextmanager
def _serving(app: FastAPI) -> Iterator[httpx.Client]:
    """`app` under real uvicorn on a free port, with an httpx client that keeps no cookies."""
    # Binding the socket here, on port 0, leaves no window for another process to take the port.
    listener = socket.create_server(("127.0.0.1", 0))
    # Access lines reach caplog, through the filter `campaign-pipeline web` puts on its handlers.
    access_log, redact = logging.getLogger("uvicorn.access"), RedactTokens()
    propagate, disabled, level = access_log.propagate, access_log.disabled, access_log.level
    # Another test in this process may have run logging.config (Prefect's does), which disables
    # loggers it does not name; the access line must reach caplog whatever ran before.
    access_log.propagate, access_log.disabled = True, False
    access_log.setLevel(logging.INFO)
    access_log.addFilter(redact)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
        access_log.removeFilter(redact)
        access_log.propagate, access_log.disabled = propagate, disabled
        access_log.setLevel(level)


@pytest.fixture
def serve() -> Callable[[FastAPI], AbstractContextManager[httpx.Client]]:
    """`with serve(app) as client:` runs the app under uvicorn for the block."""
    return _serving
