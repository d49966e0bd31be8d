"""A loopback server speaking the OpenAI Chat Completions API, with scriptable faults.

It also serves the Files and Batch API (`tests.support.fake_openai_batches`): uploads, batches
answered by the same responder, their output and error files, with expiry, per-request errors
and a malformed line as faults (`batch_faults`); and, with `prompt_caching=True`, reports a
repeated system message as `usage.prompt_tokens_details.cached_tokens`.

Usage::

    with FakeOpenAI(latency_ms=0) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test")
        server.script(["429", "ok"])          # next two requests
        server.configure(fault_rates={"500": 0.1}, seed=7)
        server.stats().requests

Thread mode (default) runs uvicorn in a daemon thread of the calling process; ``process=True``
runs it in a child process (no shared GIL with the client) and drives it through
``POST /_control`` / ``GET /_stats``, which both modes serve.
Latency applies to 200 responses only (model generation time); error statuses return at once.
Cost: ~0.3-0.5 ms server CPU per request, against ~3-4 ms client CPU per ``AsyncOpenAI``
``parse()`` call, so the client, not this server, bounds throughput
(``python -m tests.support.fake_openai --bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvicorn

from tests.support.fake_openai_app import (
    TRANSPORT_KEY,
    AppState,
    FakeOpenAIApp,
    FakeOpenAIConfig,
    FakeOpenAIStats,
    RequestRecord,
    load_responder,
)
from tests.support.openai_wire import Fault, Responder, default_responder

__all__ = [
    "FakeOpenAI",
    "FakeOpenAIConfig",
    "FakeOpenAIStats",
    "Fault",
    "RequestRecord",
    "Responder",
    "default_responder",
]

_MODULE = __spec__.name if __spec__ is not None else __name__


def _protocol_class() -> type[asyncio.Protocol]:
    """Pick the fastest installed uvicorn HTTP/1.1 protocol, exposing its transport to the app."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class _Protocol(base):  # a base chosen at run time, typed Any
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None:  # the request task is created but has not run yet
                # An extra scope key the fake's app reads; not one of ASGI's typed keys.
                scope: dict[str, Any] = self.cycle.scope
                scope[TRANSPORT_KEY] = self.transport

    return _Protocol


def _uvicorn_server(state: AppState) -> uvicorn.Server:
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    config = uvicorn.Config(
        FakeOpenAIApp(state),
        http=_protocol_class(),
        loop="uvloop" if has_uvloop else "asyncio",
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=120,
        timeout_graceful_shutdown=1,
        backlog=2048,
    )
    return uvicorn.Server(config)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeOpenAI:
    """Start/stop handle for the fake server, usable as a context manager."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        responder: Responder | str | None = None,
        process: bool = False,
        **config: Any,
    ) -> None:
        if process and responder is not None and not isinstance(responder, str):
            raise ValueError("process mode needs the responder as a 'module:function' string")
        self.process = process
        self._config = AppState.validated(FakeOpenAIConfig(latency_ms=latency_ms, **config))
        self._responder = responder
        self._state: AppState | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def child_pid(self) -> int | None:
        """PID of the server process in process mode."""
        return self._child.pid if self._child is not None else None

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``openai.AsyncOpenAI``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind a free loopback port and serve; returns once connections are accepted."""
        sock = _listen()
        self.port = sock.getsockname()[1]
        if self.process:
            self._start_child(sock)
            return
        self._state = AppState(self._config, load_responder(self._responder))
        self._server = server = _uvicorn_server(self._state)
        self._thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
        self._thread.name = f"fake-openai-{self.port}"
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server failed to start")
            time.sleep(0.005)

    def _start_child(self, sock: socket.socket) -> None:
        root = Path(__file__).resolve().parents[_MODULE.count(".")]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        argv = [
            sys.executable,
            "-m",
            _MODULE,
            "--serve",
            str(sock.fileno()),
            "--parent",
            str(os.getpid()),
        ]
        argv += ["--config", json.dumps(asdict(self._config))]
        if self._responder is not None:
            argv += ["--responder", str(self._responder)]
        self._child = subprocess.Popen(argv, pass_fds=[sock.fileno()], env=env)
        sock.close()  # the child holds its own copy
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self._child.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("fake OpenAI server process failed to start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving; in-flight requests are dropped."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = self._server.force_exit = True
            self._thread.join(timeout=5)
        if self._child is not None:
            self._child.terminate()
            try:
                self._child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        self._server = self._thread = self._child = None

    def _http(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        url = f"http://127.0.0.1:{self.port}{path}"
        headers = {"content-type": "application/json"}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with _NO_PROXY.open(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(json.loads(exc.read())["error"]["message"]) from None

    def _control(self, payload: Mapping[str, Any]) -> None:
        if self._state is not None:
            self._state.control(payload)
        else:
            self._http("POST", "/_control", payload)

    def configure(self, **changes: Any) -> None:
        """Change any ``FakeOpenAIConfig`` field at runtime."""
        self._control({"configure": changes})

    def set_latency(self, latency_ms: float) -> None:
        """Set the delay before each 200 response."""
        self.configure(latency_ms=latency_ms)

    def script(self, faults: Iterable[Fault | str | None]) -> None:
        """Queue one outcome per upcoming request (None or "ok" = normal); overrides rates."""
        self._control({"script": [Fault(item or Fault.OK).value for item in faults]})

    def clear_script(self) -> None:
        """Drop any queued scripted outcomes."""
        self._control({"clear_script": True})

    def set_responder(self, responder: Responder | str | None) -> None:
        """Replace the responder (None restores the default)."""
        if self._state is not None:
            self._state.responder = load_responder(responder)
        elif responder is not None and not isinstance(responder, str):
            raise ValueError("process mode needs the responder as a 'module:function' string")
        else:
            self._control({"responder": responder})

    def batch_faults(self, **faults: Any) -> None:
        """Set what the next batches do (`BatchFaults` fields; none restores the defaults)."""
        self._control({"batch_faults": faults})

    def finish_batches(self) -> None:
        """Complete every batch still `in_progress`."""
        self._control({"finish_batches": True})

    def reset(self) -> None:
        """Zero the counters, empty the request log and the script (config is kept)."""
        self._control({"reset": True})

    def stats(self) -> FakeOpenAIStats:
        """Return the counters."""
        if self._state is not None:
            return self._state.stats()
        data = self._http("GET", "/_stats")
        data["retry_counts"] = {int(k): v for k, v in data["retry_counts"].items()}
        return FakeOpenAIStats(**data)

    def request_log(self) -> list[RequestRecord]:
        """Return the logged completion requests, oldest first."""
        if self._state is not None:
            return self._state.log()
        return [RequestRecord(**item) for item in self._http("GET", "/_stats?log=1")["log"]]


def _serve(fd: int, config_json: str, responder: str | None, parent: int | None) -> None:
    state = AppState(FakeOpenAIConfig(**json.loads(config_json)), load_responder(responder))
    server = _uvicorn_server(state)

    def exit_with_parent() -> None:
        # a killed test run must not leave an orphaned server behind
        while os.getppid() == parent:
            time.sleep(0.5)
        server.should_exit = True

    if parent is not None:
        threading.Thread(target=exit_with_parent, daemon=True).start()
    server.run(sockets=[socket.socket(fileno=fd)])


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``--serve FD`` (child process mode) or ``--bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="FD")
    parser.add_argument("--config", default="{}")
    parser.add_argument("--responder")
    parser.add_argument("--parent", type=int)
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    if args.serve is not None:
        _serve(args.serve, args.config, args.responder, args.parent)
    elif args.bench:
        from tests.support.bench import bench_fake_openai

        bench_fake_openai(seconds=args.seconds, concurrency=args.concurrency)
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
