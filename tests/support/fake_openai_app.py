"""The fake OpenAI server's ASGI app: config, fault selection, counters and responses.

Thread-safe: the app runs on the server's event loop while tests call ``AppState`` methods
from their own thread, so every read-modify-write happens under one lock.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qs

from tests.support.fake_openai_batches import BatchFaults, FakeFiles
from tests.support.openai_wire import (
    Fault,
    Responder,
    completion_body,
    completion_object,
    default_responder,
    error_body,
    invalid_content,
    system_prefix,
)

# ASGI scope key under which the server protocol exposes the transport (for connection drops)
TRANSPORT_KEY = "fake_openai.transport"
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class FakeOpenAIConfig:
    """Runtime-adjustable behaviour of the fake server."""

    latency_ms: float = 0.0
    retry_after: str = "0.05"  # Retry-After seconds sent with 429 (also as retry-after-ms)
    error_retry_after: str | None = None  # Retry-After sent with 500/503; the real API sends none
    timeout_hold_s: float = 30.0  # how long a "timeout" fault holds the request open
    fault_rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    record_bodies: bool = True
    max_log: int = 1000
    # Prompt caching: a request whose system message the server has answered before reports
    # that message's tokens as `cached_tokens` (the real API also needs 1,024 tokens or more).
    prompt_caching: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One received completion request."""

    path: str
    body: dict[str, Any]
    retry_count: int | None
    outcome: str


@dataclass(frozen=True)
class FakeOpenAIStats:
    """Counters snapshot; ``faults`` is keyed by ``Fault`` value."""

    requests: int
    successes: int
    faults: dict[str, int]
    disconnects: int
    in_flight: int
    retry_counts: dict[int, int]
    # The most completion requests in flight at once since the last reset.
    peak_in_flight: int = 0
    uploads: int = 0
    # How often each batch request's custom_id was submitted in a batch.
    batch_submissions: dict[str, int] = field(default_factory=dict)


class AppState:
    """Config, fault script and counters shared by the event loop and the test thread."""

    def __init__(self, config: FakeOpenAIConfig, responder: Responder | None) -> None:
        self._lock = threading.Lock()
        self.responder: Responder = responder or default_responder
        self._rng = random.Random(config.seed)
        self._script: deque[Fault] = deque()
        self.config = self.validated(config)
        self._log: deque[RequestRecord] = deque(maxlen=config.max_log)
        self.files = FakeFiles()
        self._prefixes: set[str] = set()
        self._zero()

    def _zero(self) -> None:
        self._requests = self._successes = self._disconnects = self._in_flight = 0
        self._peak_in_flight = 0
        self._faults: Counter[str] = Counter()
        self._retry_counts: Counter[int] = Counter()
        self._log.clear()
        self._prefixes.clear()
        self.files.reset()

    def cached_tokens(self, request: dict[str, Any]) -> int:
        """The prompt tokens a request reads from the (simulated) prompt cache."""
        text, tokens = system_prefix(request)
        with self._lock:
            if not self.config.prompt_caching or not text:
                return 0
            seen = text in self._prefixes
            self._prefixes.add(text)
        return tokens if seen else 0

    @staticmethod
    def validated(config: FakeOpenAIConfig) -> FakeOpenAIConfig:
        """Return ``config`` with fault-rate keys normalised; raise ValueError if invalid."""
        rates = {Fault(key).value: float(rate) for key, rate in config.fault_rates.items()}
        if sum(rates.values()) > 1.0 or any(rate < 0 for rate in rates.values()):
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1: {rates}")
        return replace(config, fault_rates=rates)

    def control(self, payload: Mapping[str, Any]) -> None:
        """Apply a control message (same shape as the ``POST /_control`` body)."""
        with self._lock:
            if payload.get("reset"):
                self._zero()
                self._script.clear()
            if payload.get("clear_script"):
                self._script.clear()
            if changes := payload.get("configure"):
                known = {f.name for f in fields(FakeOpenAIConfig)}
                if unknown := set(changes) - known:
                    raise ValueError(f"unknown config keys: {sorted(unknown)}")
                self.config = self.validated(replace(self.config, **changes))
                if "seed" in changes:
                    self._rng.seed(self.config.seed)
                if "max_log" in changes:
                    self._log = deque(self._log, maxlen=self.config.max_log)
            self._script.extend(Fault(item or Fault.OK) for item in payload.get("script", ()))
            if "batch_faults" in payload:
                self.files.faults = BatchFaults(**payload["batch_faults"])
            if payload.get("finish_batches"):
                self.files.finish()
            if "responder" in payload:
                self.responder = load_responder(payload["responder"])

    def admit(self, retry_count: int | None) -> tuple[int, Fault | None, FakeOpenAIConfig]:
        """Count a request; pick its scripted or random fault (None: ask the responder)."""
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            if retry_count is not None:
                self._retry_counts[retry_count] += 1
            fault: Fault | None = None
            if self._script:
                fault = self._script.popleft()
            elif self.config.fault_rates:
                draw = self._rng.random()
                for name, rate in self.config.fault_rates.items():
                    if draw < rate:
                        fault = Fault(name)
                        break
                    draw -= rate
            return self._requests, fault, self.config

    def outcome(self, record: RequestRecord) -> None:
        """Count what the request turned into and log it."""
        with self._lock:
            if record.outcome == Fault.OK:
                self._successes += 1
            else:
                self._faults[record.outcome] += 1
            if self.config.record_bodies:
                self._log.append(record)

    def done(self, *, disconnected: bool) -> None:
        """Mark a request finished."""
        with self._lock:
            self._in_flight -= 1
            self._disconnects += disconnected

    def stats(self) -> FakeOpenAIStats:
        """Return a snapshot of the counters."""
        with self._lock:
            return FakeOpenAIStats(
                requests=self._requests,
                successes=self._successes,
                faults=dict(self._faults),
                disconnects=self._disconnects,
                in_flight=self._in_flight,
                peak_in_flight=self._peak_in_flight,
                retry_counts=dict(self._retry_counts),
                uploads=self.files.uploads,
                batch_submissions=dict(self.files.submitted),
            )

    def log(self) -> list[RequestRecord]:
        """Return the logged requests, oldest first."""
        with self._lock:
            return list(self._log)


def load_responder(spec: Responder | str | None) -> Responder:
    """Resolve a responder callable or a ``"module:function"`` import string."""
    if spec is None:
        return default_responder
    if callable(spec):
        return spec
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


async def _client_left_within(receive: Callable[[], Any], seconds: float) -> bool:
    """Wait up to ``seconds``; return True as soon as the client disconnects."""
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


async def _respond(send: Callable[..., Any], status: int, body: bytes, *headers: Any) -> None:
    length = (b"content-length", str(len(body)).encode())
    start = {"type": "http.response.start", "status": status, "headers": [_JSON, length, *headers]}
    await send(start)
    await send({"type": "http.response.body", "body": body})


class FakeOpenAIApp:
    """Raw ASGI app: the completions endpoint plus ``/_control`` and ``/_stats``."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw, path, method = b"".join(chunks), scope["path"], scope["method"]
        if method == "POST" and path.endswith("/chat/completions"):
            await self._complete(scope, receive, send, raw)
        elif path.startswith("/v1/files") or path.startswith("/v1/batches"):
            await self._files(scope, send, raw)
        elif path == "/_stats":
            payload = asdict(self.state.stats())
            if b"log=1" in scope["query_string"]:
                payload["log"] = [asdict(record) for record in self.state.log()]
            await _respond(send, 200, json.dumps(payload).encode())
        elif method == "POST" and path == "/_control":
            try:
                self.state.control(json.loads(raw or b"{}"))
            except (ValueError, TypeError, ImportError, AttributeError) as exc:
                await _respond(send, 400, error_body(Fault.BAD_REQUEST, str(exc)))
                return
            await _respond(send, 200, b"{}")
        else:
            await _respond(send, 404, error_body(Fault.BAD_REQUEST, f"Unknown path {path}"))

    async def _files(self, scope: dict[str, Any], send: Any, raw: bytes) -> None:
        """The Files and Batch API (see `tests.support.fake_openai_batches`)."""
        files, method = self.state.files, scope["method"]
        parts = scope["path"].strip("/").split("/")[1:]  # after "v1"
        found: dict[str, Any] | bytes | None = None
        if parts == ["files"] and method == "POST":
            content_type = dict(scope["headers"]).get(b"content-type", b"")
            found = files.upload(content_type, raw)
        elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            found = files.content(parts[1])
        elif parts == ["batches"] and method == "POST":
            found = files.create(json.loads(raw or b"{}"), self._batch_answer)
        elif parts == ["batches"]:
            query = parse_qs(scope["query_string"].decode())
            after = query.get("after", [None])[0]
            found = files.listing(after, int(query.get("limit", ["20"])[0]))
        elif len(parts) == 2 and parts[0] == "batches":
            found = files.retrieve(parts[1])
        elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            found = files.cancel(parts[1])
        if found is None:
            await _respond(send, 404, error_body(Fault.BAD_REQUEST, f"No such object: {parts}"))
        elif isinstance(found, bytes):
            await _respond(send, 200, found)
        else:
            await _respond(send, 200, json.dumps(found).encode())

    def _batch_answer(self, request: dict[str, Any], number: int) -> dict[str, Any]:
        answer = self.state.responder(request)
        content = invalid_content(request) if isinstance(answer, Fault) else answer
        cached = self.state.cached_tokens(request)
        return completion_object(
            request, content, f"chatcmpl-batch{number:09d}", cached_tokens=cached
        )

    async def _complete(self, scope: dict[str, Any], receive: Any, send: Any, raw: bytes) -> None:
        retry_header = dict(scope["headers"]).get(b"x-stainless-retry-count")
        retry_count = int(retry_header) if retry_header and retry_header.isdigit() else None
        number, fault, config = self.state.admit(retry_count)
        left = False
        try:
            try:
                request = json.loads(raw)
            except ValueError:
                request = {}
                fault = Fault.BAD_REQUEST
            content: dict[str, Any] | str | None = None
            if fault is None:
                answer = self.state.responder(request)
                if isinstance(answer, Fault):
                    fault = answer
                else:
                    content = answer
            outcome = fault or Fault.OK
            self.state.outcome(RequestRecord(scope["path"], request, retry_count, outcome.value))
            left = await self._reply(
                scope, receive, send, request, outcome, content, config, number
            )
        finally:
            self.state.done(disconnected=left)

    async def _reply(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        request: dict[str, Any],
        fault: Fault,
        content: dict[str, Any] | str | None,
        config: FakeOpenAIConfig,
        number: int,
    ) -> bool:
        """Send the response for ``fault``; return True if the client left first."""
        if fault == Fault.CONNECTION_DROP:
            scope[TRANSPORT_KEY].close()
            await receive()  # returns once uvicorn has seen the close, so it won't answer 500
            return False
        if fault in _ERROR_STATUS:
            headers = []
            delay = config.retry_after if fault == Fault.RATE_LIMIT else config.error_retry_after
            if delay is not None:
                millis = str(round(float(delay) * 1000)).encode()
                headers = [(b"retry-after", delay.encode()), (b"retry-after-ms", millis)]
            await _respond(send, _ERROR_STATUS[fault], error_body(fault), *headers)
            return False
        hold = config.timeout_hold_s if fault == Fault.TIMEOUT else config.latency_ms / 1000
        if hold > 0 and await _client_left_within(receive, hold):
            return True
        if fault == Fault.MALFORMED:
            content = 'Sure! Here is the email: {"subject": "Hi'
        elif fault == Fault.INVALID:
            content = invalid_content(request)
        elif content is None:
            content = default_responder(request)
        cached = self.state.cached_tokens(request)
        body = completion_body(request, content, f"chatcmpl-fake{number:09d}", cached_tokens=cached)
        await _respond(send, 200, body, (b"x-request-id", f"req_fake{number}".encode()))
        return False


_ERROR_STATUS = {
    Fault.RATE_LIMIT: 429,
    Fault.SERVER_ERROR: 500,
    Fault.UNAVAILABLE: 503,
    Fault.BAD_REQUEST: 400,
}
