"""The web app under real uvicorn on a free loopback port, for the tests that post to it."""

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from web.app import RedactTokens


@contextmanager
def serving(app: FastAPI) -> Iterator[httpx.Client]:
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
