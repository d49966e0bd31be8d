"""Throughput of `ingest-engagement-events` on a large JSONL export, dedup and stop rules included.

Creates a database beside DATABASE_URL (else on the embedded server), seeds one campaign with
--sends sent emails (each with a scheduled follow-up), writes a JSONL file of --events generic
events (opens and clicks mostly, plus replies, hard and soft bounces, unsubscribes, complaints,
events for unknown messages and a few malformed lines), then runs the real flow under the
Prefect test harness twice: the first run ingests, the second finds only duplicates. Each run
also reports its CPU per event: this process's (reading, parsing, the flow) and PostgreSQL's
when the server runs on this machine (all of its processes: on a server others use too, their
work counts as well).

    PYTHONPATH=. .venv/bin/python benchmarks/engagement.py --json benchmarks/results-engagement.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.harness.database import (  # noqa: E402
    create_database,
    drop_database,
    libpq,
    server_facts,
    server_url,
)
from benchmarks.harness.machine import CPUMeter, loadavg  # noqa: E402
from core.engagement.report import IngestColumn  # noqa: E402

# Event mix per 1,000: what a cold-email campaign's webhooks look like, with the rare kinds
# frequent enough that the stop rules do real work.
MIX = [
    ("open", 620),
    ("click", 250),
    ("reply", 40),
    ("auto_reply", 20),
    ("bounce_hard", 20),
    ("bounce_soft", 20),
    ("unsubscribe", 15),
    ("complaint", 5),
    ("unknown", 8),
    ("malformed", 2),
]


SEED_ROWS = (
    """
    INSERT INTO "Lead" (id, "workspaceId", email, "updatedAt")
    SELECT 'l' || i, 'w', 'lead' || i || '@co' || (i %% 5000) || '.example', now()
    FROM generate_series(1, %(n)s) i
    """,
    """
    INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status, "updatedAt",
                                "currentStepOrder", "nextScheduledDate")
    SELECT 'cl' || i, 'c', 'l' || i, 'active', now(), 3, NULL
    FROM generate_series(1, %(n)s) i
    """,
    """
    INSERT INTO "EmailSend" (id, "campaignId", "leadId", "stepId", "toEmail", status,
                             "scheduledFor", "sentAt", "attemptedAt",
                             "providerMessageId", "updatedAt", mailbox)
    SELECT 'e' || i, 'c', 'l' || i, 's1', 'lead' || i || '@co' || (i %% 5000) || '.example',
           'sent', timestamp '2026-11-19', timestamp '2026-11-19',
           timestamp '2026-11-19', '<e' || i || '@seller.example>', now(),
           'sam@seller.example'
    FROM generate_series(1, %(n)s) i
    """,
    """
    INSERT INTO "EmailSend" (id, "campaignId", "leadId", "stepId", "toEmail", status,
                             "scheduledFor", "updatedAt")
    SELECT 'f' || i, 'c', 'l' || i, 's2', 'lead' || i || '@co' || (i %% 5000) || '.example',
           'scheduled', now() + interval '1 day', now()
    FROM generate_series(1, %(n)s) i
    """,
    """
    ANALYZE
    """,
)


def seed(url: str, sends: int) -> None:
    """One workspace and campaign, `sends` leads each with a sent step 1 and a due step 2."""
    with psycopg.connect(libpq(url)) as conn:
        conn.execute(
            """
            INSERT INTO "Workspace" (id, name, "updatedAt") VALUES ('w', 'bench', now());
            INSERT INTO "Campaign" (id, "workspaceId", name, status, "sendingRules", "updatedAt")
            VALUES ('c', 'w', 'bench', 'active',
                    '{"fromEmail": "sam@seller.example", "stopOnCompanyReply": true}', now());
            INSERT INTO "SequenceStep" (id, "campaignId", "stepOrder", "delayDays",
                                        "subjectTemplate", "bodyTemplate")
            VALUES ('s1', 'c', 1, 0, 'Hi', 'Hello'), ('s2', 'c', 2, 3, 'Re: Hi', 'Again');
            """
        )
        for statement in SEED_ROWS:
            conn.execute(statement, {"n": sends})


def write_events(path: Path, events: int, sends: int, seed_value: int = 7) -> dict[str, int]:
    """A JSONL file of generic events; returns how many of each kind it holds."""
    rng = random.Random(seed_value)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    start = datetime(2026, 11, 20, tzinfo=UTC)
    counts: dict[str, int] = {}
    with path.open("w") as out:
        for i in range(events):
            kind = kinds[rng.randrange(len(kinds))]
            counts[kind] = counts.get(kind, 0) + 1
            lead = rng.randrange(1, sends + 1)
            at = (start + timedelta(seconds=i)).isoformat()
            record: dict[str, object] = {"occurredAt": at, "eventId": f"ev{i}"}
            if kind == "malformed":
                out.write("{not json\n")
                continue
            if kind == "unknown":
                record |= {"type": "open", "messageId": f"<nobody{i}@elsewhere.example>"}
            elif kind.startswith("bounce"):
                record |= {
                    "type": "bounce",
                    "bounceKind": kind.split("_")[1],
                    "messageId": f"<e{lead}@seller.example>",
                    "diagnostic": "550 5.1.1 user unknown",
                }
            elif kind == "click":
                record |= {"type": "click", "emailSendId": f"e{lead}", "url": "https://x.example/a"}
            else:
                record |= {"type": kind, "messageId": f"<e{lead}@seller.example>"}
            out.write(json.dumps(record) + "\n")
    return counts


def run_flow(
    path: Path, chunk: int, postmaster: int | None
) -> tuple[float, dict[str, object], dict[str, Any]]:
    """One flow run over the file: seconds, what it counted, and the CPU it took."""
    from benchmarks.dependencies import EngagementSource, ingest_engagement_events

    meter = CPUMeter({}, postmaster)
    started = time.perf_counter()
    report = asyncio.run(
        ingest_engagement_events(source=EngagementSource.file, path=str(path), chunk_size=chunk)
    )
    seconds = time.perf_counter() - started
    cpu = meter.report()
    summary = {
        "new": report.total(IngestColumn.new),
        "duplicate": report.total(IngestColumn.duplicate),
        "quarantined": report.total(IngestColumn.quarantined),
        "malformed": report.malformed_total,
        "stopped": dict(report.stopped),
        "cancelled": report.cancelled,
    }
    return seconds, summary, cpu


def cpu_per_event(cpu: dict[str, Any], events: int) -> str:
    """The flow process's and PostgreSQL's CPU per event, in microseconds."""
    parts = [
        f"{name} {1e6 * cpu[name] / events:.0f} us"
        for name in ("flow_process", "postgres")
        if cpu.get(name) is not None
    ]
    return f"CPU per event: {', '.join(parts)} (machine {cpu['machine_busy_pct']} % busy)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sends", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    admin = server_url()
    machine: dict[str, object] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": loadavg(),
    }
    runs: list[dict[str, Any]] = []
    results: dict[str, object] = {
        "command": " ".join(sys.argv),
        "machine": machine,
        "events": args.events,
        "sends": args.sends,
        "runs": runs,
    }
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=90):
        path = Path(tmp) / "events.jsonl"
        results["mix"] = write_events(path, args.events, args.sends)
        for repeat in range(args.repeats):
            name = f"cp_bench_engagement_{os.getpid()}_{repeat}"
            url = create_database(admin, name)
            try:
                from db.engine import upgrade

                upgrade(url)
                seed(url, args.sends)
                results["postgres"], postmaster = server_facts(url)
                # The flow reads its settings from the environment; sessions are per URL.
                os.environ["DATABASE_URL"] = url
                first, first_summary, first_cpu = run_flow(path, args.chunk, postmaster)
                again, again_summary, again_cpu = run_flow(path, args.chunk, postmaster)
                run = {
                    "first_seconds": first,
                    "first_events_per_s": args.events / first,
                    "first": first_summary,
                    "first_cpu_s": first_cpu,
                    "again_seconds": again,
                    "again_events_per_s": args.events / again,
                    "again": again_summary,
                    "again_cpu_s": again_cpu,
                }
                runs.append(run)
                print(
                    f"run {repeat + 1}: first {args.events / first:,.0f} events/s"
                    f" ({first:.1f} s, {first_summary}); again {args.events / again:,.0f}"
                    f" events/s ({again:.1f} s, new {again_summary['new']})\n"
                    f"  first: {cpu_per_event(first_cpu, args.events)}\n"
                    f"  again: {cpu_per_event(again_cpu, args.events)}",
                    flush=True,
                )
            finally:
                drop_database(admin, name)
    results["median_first_events_per_s"] = statistics.median(r["first_events_per_s"] for r in runs)
    results["median_again_events_per_s"] = statistics.median(r["again_events_per_s"] for r in runs)
    for name in ("flow_process", "postgres"):
        spent = [r["first_cpu_s"][name] for r in runs if r["first_cpu_s"][name] is not None]
        if spent:
            results[f"median_first_{name}_cpu_us_per_event"] = round(
                1e6 * statistics.median(spent) / args.events, 1
            )
    machine["loadavg_after"] = loadavg()
    print(
        f"median: first ingestion {results['median_first_events_per_s']:,.0f} events/s,"
        f" re-ingestion {results['median_again_events_per_s']:,.0f} events/s (target >= 20,000);"
        " first ingestion's CPU per event:"
        f" flow {results.get('median_first_flow_process_cpu_us_per_event')} us,"
        f" postgres {results.get('median_first_postgres_cpu_us_per_event')} us"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
