"""Re-reading unchanged sending mailboxes: `ingest-engagement-events source=imap` over 10 Mailbox
rows, each its own login on its own loopback IMAP server, after a first run has read them.

Creates a database beside DATABASE_URL (else on the embedded server), adds the mailboxes with
--messages messages each, runs the real flow under the Prefect test harness once to read them
and set every checkpoint, then times --repeats further runs (nothing new: one EXAMINE per
mailbox) and, for scale, the bare reader (`read_new_mail`) over the same mailboxes. The target
is the flow run's own time (Running to Completed); the time from the call to the report, which
adds creating the run on the harness's SQLite API server, is recorded beside it. The IMAP
servers are threads of this process: each answers a handful of short lines per run.

    PYTHONPATH=. .venv/bin/python benchmarks/mailbox_replies.py \
        --json benchmarks/results-mailbox-replies.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from benchmarks.harness.database import (  # noqa: E402
    create_database,
    drop_database,
    libpq,
    server_facts,
    server_url,
)
from benchmarks.harness.machine import load_triple, machine_info  # noqa: E402
from core.engagement.config import IMAPConfig, read_new_mail  # noqa: E402
from core.engagement.report import MailboxOutcome  # noqa: E402
from core.mailboxes.mailbox_file import ImapSpec, parse_mailbox_file  # noqa: E402
from db.engine import DatabaseConfig, sessions_for, unit_of_work, upgrade  # noqa: E402
from db.queries.imap_checkpoints import read_imap_mailboxes  # noqa: E402
from db.queries.mailboxes import add_mailboxes  # noqa: E402
from tests.support.imap_server import LoopbackIMAP  # noqa: E402

MESSAGE = (
    b"From: Ada <ada@lead.example>\r\nTo: {to}\r\nSubject: Re: hello\r\n"
    b"Message-ID: <r{n}@lead.example>\r\nIn-Reply-To: <nobody@seller.example>\r\n"
    b"Date: Tue, 01 Dec 2026 09:00:00 +0000\r\n\r\nThanks, not now.\r\n"
)
TARGET_S = 2.0


def address(index: int) -> str:
    return f"box{index}@seller.example"


def start_servers(stack: ExitStack, count: int, messages: int) -> list[LoopbackIMAP]:
    """One server per mailbox, each with its own login and `messages` messages."""
    servers = []
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for index in range(count):
        server = stack.enter_context(
            LoopbackIMAP(auth=(address(index), f"pw-{index}"), uidvalidity=1000 + index)
        )
        for n in range(messages):
            raw = MESSAGE.replace(b"{to}", address(index).encode()).replace(
                b"{n}", f"{index}-{n}".encode()
            )
            server.add("INBOX", raw, at + timedelta(minutes=n))
        os.environ[f"BOX{index}_IMAP_PASSWORD"] = f"pw-{index}"
        servers.append(server)
    return servers


def add_rows(url: str, servers: list[LoopbackIMAP]) -> None:
    with psycopg.connect(libpq(url)) as conn:
        conn.execute("""INSERT INTO "Workspace" (id, name, "updatedAt") VALUES ('w', 'b', now())""")
    entries = [
        {
            "email": address(index),
            "smtp": {"host": "smtp.example", "username": address(index), "password": "env:X"},
            "imap": {
                "host": server.host,
                "port": server.port,
                "ssl": False,
                "username": address(index),
                "password": f"env:BOX{index}_IMAP_PASSWORD",
            },
        }
        for index, server in enumerate(servers)
    ]
    document = parse_mailbox_file({"workspaceId": "w", "mailboxes": entries})
    with unit_of_work(sessions_for(DatabaseConfig(url=SecretStr(url)))) as session:
        add_mailboxes(session, document, now=datetime.now(UTC))


async def run_flow() -> tuple[float, float, list[MailboxOutcome]]:
    """One flow run: seconds from the call to its report, its own run time (Running to
    Completed, as Prefect records it), and each mailbox's outcome."""
    from prefect.client.orchestration import get_client

    from benchmarks.dependencies import EngagementSource, ingest_engagement_events

    started = time.perf_counter()
    state = await ingest_engagement_events(source=EngagementSource.imap, return_state=True)
    report = await state.aresult()
    wall = time.perf_counter() - started
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    return wall, run.total_run_time.total_seconds(), [m.outcome for m in report.mailboxes]


async def run_flows(
    servers: list[LoopbackIMAP], repeats: int
) -> tuple[float, list[tuple[float, float]]]:
    """The first read, then `repeats` re-reads, in one event loop as a served deployment runs
    them: `asyncio.run` per call would add Prefect's 2 s of client start-up and drain to each."""
    first, _, outcomes = await run_flow()
    assert outcomes == [MailboxOutcome.read] * len(servers), outcomes
    for server in servers:
        server.commands.clear()
    again = []
    for _ in range(repeats):
        wall, run_time, outcomes = await run_flow()
        assert outcomes == [MailboxOutcome.unchanged] * len(servers), outcomes
        again.append((wall, run_time))
    return first, again


def run_reader(url: str) -> float:
    """The bare reader over every mailbox from its stored checkpoint: the IMAP part alone."""
    with unit_of_work(sessions_for(DatabaseConfig(url=SecretStr(url)))) as session:
        inboxes = read_imap_mailboxes(session)
    started = time.perf_counter()
    for inbox in inboxes:
        spec = ImapSpec.model_validate(inbox.imap)
        password = SecretStr(os.environ[spec.password.name])
        assert not read_new_mail(IMAPConfig.from_mailbox(spec, password), inbox.checkpoint).results
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    admin = server_url()
    name = f"cp_bench_mailbox_replies_{os.getpid()}"
    results: dict[str, Any] = {"command": " ".join(sys.argv), "load_before": load_triple()}
    with ExitStack() as stack, prefect_test_harness(server_startup_timeout=90):
        servers = start_servers(stack, args.mailboxes, args.messages)
        url = create_database(admin, name)
        try:
            upgrade(url)
            results["machine"] = machine_info(server_facts(url)[0])
            add_rows(url, servers)
            os.environ["DATABASE_URL"] = url  # the flow reads its settings from the environment
            first, again = asyncio.run(run_flows(servers, args.repeats))
            asked = [c.split(" ")[1] for s in servers for c in s.commands]
            results |= {
                "first_read_s": first,
                "unchanged_wall_s": [wall for wall, _ in again],
                "unchanged_run_time_s": [run_time for _, run_time in again],
                "median_unchanged_wall_s": statistics.median(wall for wall, _ in again),
                "median_unchanged_run_time_s": statistics.median(run for _, run in again),
                "unchanged_reader_s": statistics.median(run_reader(url) for _ in range(5)),
                "searches_and_fetches": sum(command == "UID" for command in asked),
            }
        finally:
            drop_database(admin, name)
    results["load_after"] = load_triple()
    median = results["median_unchanged_run_time_s"]
    print(
        f"first read of {args.mailboxes} x {args.messages} messages: {first:.2f} s; "
        f"re-reading {args.mailboxes} unchanged mailboxes: flow run {median:.2f} s median "
        f"(runs {', '.join(f'{r:.2f}' for _, r in again)}), call to report "
        f"{results['median_unchanged_wall_s']:.2f} s median, bare reader "
        f"{results['unchanged_reader_s'] * 1000:.0f} ms; SEARCH/FETCH commands: "
        f"{results['searches_and_fetches']} (target < {TARGET_S} s: "
        f"{'yes' if median < TARGET_S else 'no'})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
