"""The parent side of a benchmark: its database, the Prefect API, and fresh child processes.

Every measured run is a child process of the benchmark's own script (`--child-<mode> SPEC`),
which prints its result as one line after RESULT_MARKER; the parent keeps every result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from benchmarks.harness.database import create_database, drop_database, server_facts, server_url
from benchmarks.harness.machine import ROOT, machine_info, wait_until_quiet

RESULT_MARKER = "BENCH-RESULT "


def emit(result: dict[str, Any]) -> None:
    """A child's result, for the parent to find in its output."""
    print(RESULT_MARKER + json.dumps(result), flush=True)


def start_parent() -> None:
    """A plain `kill` still drops the database and stops the harness (finally blocks run), and
    the harness's API server sends no telemetry (the machine has only loopback network)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--json and --keep-db, as every benchmark spells them."""
    parser.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")


def write_json(path: str | Path, results: dict[str, Any]) -> None:
    """Every run and the summary, indented, anything not JSON as its str()."""
    Path(path).write_text(json.dumps(results, indent=2, default=str))


class Parent:
    """A benchmark's database and Prefect API for the whole invocation, and its children."""

    child_script: Path
    settle_limit_s = 60.0

    def __init__(self, args: argparse.Namespace, *, db_name: str, logs_prefix: str) -> None:
        self.args = args
        self.admin_url = server_url()
        self.db_name = db_name
        self.url = ""
        self.prefect_api_url = ""
        self.prefect_server_pid: int | None = None
        self.postmaster_pid: int | None = None
        self.server_version = ""
        self.logs = Path(tempfile.mkdtemp(prefix=logs_prefix))
        self.results: dict[str, Any] = {"runs": []}

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def settle(self, limit_s: float | None = None) -> float:
        return wait_until_quiet(self.settle_limit_s if limit_s is None else limit_s)

    @contextlib.contextmanager
    def database(self) -> Iterator[None]:
        """A migrated database for the whole invocation, dropped at the end unless --keep-db."""
        from db.engine import upgrade

        self.url = create_database(self.admin_url, self.db_name)
        try:
            upgrade(self.url)
            self.server_version, self.postmaster_pid = server_facts(self.url)
            self.results["machine"] = machine_info(self.server_version)
            self.results["database"] = make_url(self.url).render_as_string(hide_password=True)
            self.log(f"database {self.results['database']} (PostgreSQL {self.server_version})")
            yield
        finally:
            if not self.args.keep_db:
                drop_database(self.admin_url, self.db_name)

    @contextlib.contextmanager
    def prefect_api(self) -> Iterator[None]:
        """The Prefect test harness as the API every child talks to, started once."""
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=90):
            self.prefect_api_url = PREFECT_API_URL.value()
            server = SubprocessASGIServer._instances.get(None)
            process = getattr(server, "server_process", None)
            self.prefect_server_pid = process.pid if process is not None else None
            self.log(f"Prefect harness at {self.prefect_api_url}; child logs in {self.logs}")
            yield

    def children(
        self, mode: str, specs: list[dict[str, Any]], *, prefix: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Run one child per spec, all at once, after the machine settles; `prefix` runs each
        under a profiler. Each result gets `settle_seconds`."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        }
        settled = self.settle()
        started = []
        for k, spec in enumerate(specs):
            argv = [*(prefix or []), sys.executable, str(self.child_script), f"--child-{mode}"]
            argv.append(json.dumps(spec))
            log = self.logs / f"{mode}-{len(self.results['runs'])}-{k}.log"
            err = log.open("w")
            process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
            started.append((process, log, err))
        results = []
        for process, log, err in started:
            out = process.communicate()[0].decode()
            err.close()
            lines = [line for line in out.splitlines() if line.startswith(RESULT_MARKER)]
            if process.returncode != 0 or not lines:
                tail = "\n".join(log.read_text().splitlines()[-40:])
                raise RuntimeError(f"{mode} child failed ({process.returncode}); {log}:\n{tail}")
            result = json.loads(lines[-1][len(RESULT_MARKER) :])
            result["settle_seconds"] = round(settled, 1)
            results.append(result)
        return results


def print_columns(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A plain text table, each column as wide as its widest cell."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
