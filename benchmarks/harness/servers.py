"""The servers a benchmark talks to, each in its own process: the fake OpenAI API and the
loopback SMTP server (tests/support), so their CPU never shares a GIL with the measured code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness.machine import ROOT
from tests.support.fake_openai import FakeOpenAI
from tests.support.smtp_server import LoopbackSMTP


def fake_openai(latency_ms: float) -> FakeOpenAI:
    """The fake OpenAI server in its own process, recording no bodies (memory stays flat)."""
    return FakeOpenAI(latency_ms=latency_ms, process=True, record_bodies=False)


def serve_smtp(logins: dict[str, str] | None = None) -> None:
    """The child side: LoopbackSMTP without recording, requiring AUTH when given `logins`
    ({user: password}); stdin `count` -> messages accepted so far, EOF -> stop."""
    with LoopbackSMTP(keep_messages=False, auth=logins or None) as server:
        print(json.dumps({"port": server.port, "pid": os.getpid()}), flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                # LoopbackSMTP counts per address only; the total is read under its lock
                # (both names are in benchmarks/dependencies.py).
                with server._cond:
                    print(sum(server._deliveries.values()), flush=True)


class SMTPServerProcess:
    """The parent side: `script --child-smtp LOGINS` runs `serve_smtp` for the whole invocation
    (LOGINS: JSON {user: password}, `{}` for a server without AUTH)."""

    def __init__(self, script: Path, logins: dict[str, str] | None = None) -> None:
        argv = [sys.executable, str(script), "--child-smtp", json.dumps(logins or {})]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        hello = json.loads(self.stdout.readline())
        self.port: int = hello["port"]
        self.pid: int = hello["pid"]

    def accepted(self) -> int:
        """Messages the server has accepted so far."""
        self.stdin.write("count\n")
        self.stdin.flush()
        return int(self.stdout.readline())

    def stop(self) -> None:
        self.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
