"""Throughput checks for the loopback servers (run via their modules' ``--bench``)."""

from __future__ import annotations

import asyncio
import os
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import httpx2
from openai import AsyncOpenAI
from openai.lib._parsing._completions import type_to_response_format_param
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from tests.support.fake_openai import FakeOpenAI
from tests.support.smtp_server import LoopbackSMTP

_PROMPT = (
    "Personalise this cold email for Ada at Example Corp.\n"
    "<draft_subject>Quick idea for Example Corp</draft_subject>\n"
    "<draft_body>Hi Ada,\n\nWe help teams like yours ship faster.\n\nBest,\nSam</draft_body>"
)


class _Draft(BaseModel):
    subject: str
    body: str


_RESPONSE_FORMAT = type_to_response_format_param(_Draft)


async def _drive(
    base_url: str, seconds: float, concurrency: int, *, raw: bool = False
) -> tuple[int, int, float]:
    """Start requests for ``seconds`` from ``concurrency`` loops; return (ok, failed, elapsed).

    ``elapsed`` runs until the last response: with 300 ms latency the loops move in lockstep, so
    counting only in-window completions would under-report by up to one whole round.

    ``raw`` posts with a bare ``httpx2.AsyncClient`` (the transport under openai) instead of
    ``AsyncOpenAI.parse``, to show what the server sustains when the client costs little CPU.
    """
    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=30)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = httpx2.AsyncClient(timeout=30, limits=limits)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You write emails."},
        {"role": "user", "content": _PROMPT},
    ]
    body = {"model": "fake", "messages": messages, "response_format": _RESPONSE_FORMAT}
    ok = failed = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def one() -> _Draft:
        if raw:
            response = await http.post(f"{base_url}/chat/completions", json=body)
            content = response.raise_for_status().json()["choices"][0]["message"]["content"]
            return _Draft.model_validate_json(content)
        completion = await client.chat.completions.parse(
            model="fake", messages=messages, response_format=_Draft
        )
        assert completion.choices[0].message.parsed is not None
        return completion.choices[0].message.parsed

    async def worker() -> None:
        nonlocal ok, failed
        while time.perf_counter() < deadline:
            try:
                await one()
            except Exception:
                failed += 1
                continue
            ok += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    await http.aclose()
    return ok, failed, elapsed


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_fake_openai(seconds: float = 3.0, concurrency: int = 64) -> None:
    """Print requests/s against the fake, per mode, latency and client (openai / bare httpx)."""
    for process in (False, True):
        for latency_ms in (0, 300):
            with FakeOpenAI(latency_ms=latency_ms, process=process, record_bodies=False) as server:
                for raw in (False, True):
                    _bench_one(server, latency_ms, seconds, concurrency, raw=raw)


def _bench_one(
    server: FakeOpenAI, latency_ms: float, seconds: float, concurrency: int, *, raw: bool
) -> None:
    asyncio.run(_drive(server.base_url, 0.5, concurrency, raw=raw))  # warm up connections
    child = server.child_pid
    server_cpu = _cpu_seconds(child) if child else None
    client_cpu = time.process_time()
    ok, failed, elapsed = asyncio.run(_drive(server.base_url, seconds, concurrency, raw=raw))
    client_cpu = time.process_time() - client_cpu
    per_request = 1000 / max(ok, 1)
    cpu = f"client cpu {client_cpu * per_request:.2f} ms/req"
    if server_cpu is not None and child:
        cpu += (
            f", server cpu {((_cpu_seconds(child) or 0.0) - server_cpu) * per_request:.2f} ms/req"
        )
    else:
        cpu += " incl. server"
    ideal = f" (ideal {concurrency * 1000 / latency_ms:.0f})" if latency_ms else ""
    print(
        f"fake_openai {'process' if child else 'thread':7s} latency={latency_ms:3.0f}ms "
        f"c={concurrency} {'httpx ' if raw else 'openai'}: {ok / elapsed:5.0f} req/s{ideal}, "
        f"{failed} failed; {cpu}"
    )


def bench_smtp(count: int = 2000) -> None:
    """Print messages/s for ``count`` small messages over one reused smtplib connection."""
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "lead@example.com"
    message["Subject"] = "Quick idea"
    message.set_content("Hi Ada,\n\nWe help teams like yours ship faster.\n\nBest,\nSam\n")
    payload = message.as_bytes()
    with (
        LoopbackSMTP(keep_messages=False) as server,
        smtplib.SMTP(server.host, server.port, local_hostname="localhost") as client,
    ):
        client.ehlo()
        started = time.perf_counter()
        for _ in range(count):
            client.sendmail("sender@example.com", ["lead@example.com"], payload)
        elapsed = time.perf_counter() - started
        delivered = server.deliveries("lead@example.com")
    print(
        f"smtp_server: {count / elapsed:.0f} messages/s over one connection ({delivered} delivered)"
    )
