"""Throughput of `send-scheduled-emails` over SMTP, against the bare smtplib ceiling.

Runs the real flow under a Prefect API (the test harness, started once) against a loopback
aiosmtpd server (tests/support/smtp_server.py) in its own process, on a database this script
creates beside DATABASE_URL (else on the embedded server) and drops at the end. Gaps, jitter,
windows and caps are out of the way, so the figure is the pipeline's own cost per send: the
handover guard, one commit per handover group (--handover-group), building the message and the
SMTP transaction. Every measured flow run and every bare-smtplib run is a fresh child process
of this script; the SMTP server is one more process for the whole run, so its CPU never shares
a GIL with the client.

    PYTHONPATH=. .venv/bin/python benchmarks/delivery.py --json benchmarks/results-delivery.json

Reuses generation.py's database and machine helpers; see docs/benchmarks.md for that one.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import make_url  # noqa: E402

from benchmarks.generation import (  # noqa: E402
    RESULT_MARKER,
    TABLES,
    create_database,
    drop_database,
    libpq,
    machine_info,
    machine_jiffies,
    median,
    pg_cpu,
    proc_cpu,
    server_facts,
    server_url,
)

SECRET = "bench-unsubscribe-secret-0123456789"
PUBLIC_BASE_URL = "https://app.sender.example"
CAMPAIGN = "bc1"
SENDER_NAME = "Sam Carter"
MAILBOXES = (
    "sam@sender.example",
    "alex@sender.example",
    "kim@sender.example",
    "lee@sender.example",
)
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Zoë")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
COMPANY = ("Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Stark")
TOPIC = ("outbound pipeline", "sales onboarding", "renewal forecasts", "lead routing", "no-shows")


def sending_rules(mailboxes: int) -> dict[str, Any]:
    """Open all day every day, no gap or jitter, caps out of reach; one or more mailboxes."""
    rules: dict[str, Any] = {
        "timezone": "UTC",
        "window": {"start": "00:00", "end": "23:59:59", "days": DAYS},
        "dailyLimit": 1_000_000,
        "mailboxDailyLimit": 1_000_000,
        "minGapSeconds": 0,
        "jitterSeconds": 0,
        "fromName": SENDER_NAME,
    }
    if mailboxes == 1:
        rules["fromEmail"] = MAILBOXES[0]
    else:
        rules["mailboxes"] = [{"email": m, "name": SENDER_NAME} for m in MAILBOXES[:mailboxes]]
    return rules


def content(i: int) -> dict[str, str]:
    """Lead i's address, name and generated message: a ~50-char subject and a ~600-char body.

    One lead in eight is called Zoë, so some To headers and bodies need an encoding.
    """
    first, last = FIRST[i % 8], LAST[(i // 8) % 8]
    company, topic = f"{COMPANY[i % 6]} {i}", TOPIC[i % 5]
    subject = f"{first}, a quick idea on {topic} at {company}"
    body = (
        f"Hi {first},\n\n"
        f"I noticed {company} has been hiring for its revenue team this quarter. Teams at that "
        f"stage usually find that {topic} is the first thing to creak.\n\n"
        f"We help companies like yours cut the manual work around {topic} by about a third in "
        "the first month, without changing the tools your reps already use. Two teams much "
        "like yours saw the same within six weeks.\n\n"
        "Would a 20-minute call next Tuesday or Wednesday be useful? If not, just say so and I "
        "will not follow up. It takes two minutes to see whether it fits at all.\n\n"
        f"Best,\n{SENDER_NAME}\nHead of Partnerships, Sender Labs"
    )
    return {
        "email": f"lead{i}@buyer{i % 997}.example",
        "first": first,
        "last": last,
        "company": company,
        "subject": subject,
        "body": body,
    }


def send_id(i: int) -> str:
    return f"bs{i:06d}"


# --------------------------------------------------------------------------------------------
# Database


def seed_sends(url: str, n: int, mailboxes: int) -> float:
    """Empty the database, then one campaign with n sends due a minute ago; returns seconds."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None)
    due = now - timedelta(minutes=1)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        conn.execute(
            """INSERT INTO "Workspace" (id, name, "updatedAt") VALUES ('bench-ws', 'Bench', %s)""",
            [now],
        )
        conn.execute(
            """INSERT INTO "Campaign" (id, "workspaceId", name, status, "sendingRules",
                                       "updatedAt")
               VALUES (%s, 'bench-ws', 'Delivery bench', 'active', %s, %s)""",
            [CAMPAIGN, json.dumps(sending_rules(mailboxes)), now],
        )
        conn.execute(
            """INSERT INTO "SequenceStep" (id, "campaignId", "stepOrder", "delayDays",
                                           "subjectTemplate", "bodyTemplate")
               VALUES ('bc1-s1', %s, 1, 0, 'Idea for {{companyName}}', 'Hi {{firstName}}')""",
            [CAMPAIGN],
        )
        rows = [content(i) for i in range(n)]
        copies = {
            '"Lead" (id, "workspaceId", email, "firstName", "lastName", "companyName",'
            ' "updatedAt")': (
                (f"bl{i}", "bench-ws", r["email"], r["first"], r["last"], r["company"], now)
                for i, r in enumerate(rows)
            ),
            '"CampaignLead" (id, "campaignId", "leadId", status, "currentStepOrder",'
            ' "updatedAt")': ((f"bcl{i}", CAMPAIGN, f"bl{i}", "active", 1, now) for i in range(n)),
            '"GeneratedMessage" (id, "campaignId", "leadId", "stepId", subject, body)': (
                (f"bgm{i}", CAMPAIGN, f"bl{i}", "bc1-s1", r["subject"], r["body"])
                for i, r in enumerate(rows)
            ),
            # Oldest first in index order, a millisecond apart, the newest due a minute ago.
            '"EmailSend" (id, "campaignId", "leadId", "stepId", "generatedMessageId", "toEmail",'
            ' status, "scheduledFor", "updatedAt")': (
                (
                    send_id(i),
                    CAMPAIGN,
                    f"bl{i}",
                    "bc1-s1",
                    f"bgm{i}",
                    r["email"],
                    "scheduled",
                    due - timedelta(milliseconds=n - i),
                    now,
                )
                for i, r in enumerate(rows)
            ),
        }
        with conn.cursor() as cur:
            for table, values in copies.items():
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    for row in values:
                        copy.write_row(row)
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def status_counts(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Sends by status, and the reasons written on those that were not sent."""
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute('SELECT status, count(*) FROM "EmailSend" GROUP BY status').fetchall()
        reasons = conn.execute(
            """SELECT status || ': ' || coalesce("statusReason", '-'), count(*) FROM "EmailSend"
               WHERE status <> 'sent' GROUP BY 1 ORDER BY 2 DESC LIMIT 10"""
        ).fetchall()
    return dict(rows), dict(reasons)


def pg_settings(url: str) -> dict[str, str]:
    names = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections")
    with psycopg.connect(libpq(url)) as conn:
        return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def explain_hand_over(url: str, runs: int = 3) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement hand_over() sends, after a whole run.

    The statement and its parameters are captured from a real hand_over() call on the last
    send, put back to `scheduled` under a bench token; every run is rolled back. It shows what
    the guard reads and writes for each handover once a mailbox has this many handovers today.
    """
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    from db.base import utcnow
    from db.engine import make_engine
    from db.queries.delivery import HandOver, hand_over, usage_today

    engine = make_engine(url)
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        if "SET status = 'sending'" in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    reopen = text(
        """UPDATE "EmailSend" SET status = 'scheduled', "claimToken" = 'bench-explain'
           WHERE id = (SELECT id FROM "EmailSend" ORDER BY "scheduledFor" DESC LIMIT 1)
           RETURNING id, mailbox"""
    )
    now = utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    plans: list[str] = []
    try:
        with Session(engine) as session:
            for i in range(runs + 2):
                with session.begin():
                    sent_id, mailbox = session.execute(reopen).one()
                    if i == 0:
                        box = mailbox or MAILBOXES[0]
                        usage_today(session, campaigns={CAMPAIGN: day}, mailboxes={box: day})
                        guard = HandOver(
                            campaign_id=CAMPAIGN,
                            mailbox=box,
                            sends=((sent_id, f"<{sent_id}@sender.example>"),),
                            day=day,
                            mailbox_limit=1_000_000,
                            campaign_limit=1_000_000,
                            min_gap=timedelta(0),
                        )
                        _, handed = hand_over(
                            session.connection(),
                            guard,
                            results=[],
                            token="bench-explain",
                            now=now,
                            lease=timedelta(60),
                        )
                        assert handed and captured, "hand_over refused the bench send"
                    else:  # the first EXPLAIN warms the cache and is discarded
                        statement, params = captured[0]
                        rows = session.connection().exec_driver_sql(
                            "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                        )
                        plans.append("\n".join(r[0] for r in rows))
                    session.rollback()
    finally:
        engine.dispose()
    plans = plans[1:]
    ms = [float(p.rsplit("Execution Time: ", 1)[1].split()[0]) for p in plans]
    rows_read: list[str] = []  # each scan: node, rows it returned, heap fetches
    for line in plans[-1].splitlines():
        if " Scan " in line and "actual" in line:
            node = line.split("(cost")[0].strip(" ->")
            rows_read.append(f"{node}: {line.rpartition('rows=')[2].split()[0]} rows")
        elif "Heap Fetches:" in line and rows_read:
            rows_read[-1] += f", {line.strip().lower()}"
    return {
        "execution_ms": ms,
        "median_ms": median(ms),
        "scans": rows_read,
        "plan": plans[-1],
        "statement": captured[0][0],
    }


# --------------------------------------------------------------------------------------------
# Child: the SMTP server, for the whole run


def child_smtp() -> None:
    """LoopbackSMTP without recording; stdin `count` -> messages accepted so far, EOF -> stop."""
    from tests.support.smtp_server import LoopbackSMTP

    with LoopbackSMTP(keep_messages=False) as server:
        print(json.dumps({"port": server.port, "pid": os.getpid()}), flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                with server._cond:
                    print(sum(server._deliveries.values()), flush=True)


class SMTPServerProcess:
    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child-smtp"]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        hello = json.loads(self.process.stdout.readline())
        self.port, self.pid = hello["port"], hello["pid"]

    def accepted(self) -> int:
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --------------------------------------------------------------------------------------------
# Child: one flow run


class Probe:
    """Seconds spent in named functions and statements, summed over threads.

    Thin wrappers around the names tasks.delivery calls; the code under test is unchanged.
    Commits, pool pings and SQL statements are split by whether a delivery lane ran them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, list[float]] = {}
        self.local = threading.local()
        self.hand_over_s = array.array("d")
        self.lane_spans: list[tuple[float, float]] = []
        self.missing: list[str] = []

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            entry = self.totals.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def where(self, name: str) -> str:
        return name + ("" if getattr(self.local, "lane", False) else " [outside lanes]")

    def timed(self, name: str, fn: Any, *, split: bool = False) -> Any:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(self.where(name) if split else name, time.perf_counter() - started)

        return wrapper

    def install(self) -> None:
        import psycopg as pg
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        import core.delivery.transport as transport
        import db.queries.delivery as queries
        import tasks.delivery as td
        from tasks.database import session_factory

        probe = self
        hand_over = queries.hand_over

        def hand_over_wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return hand_over(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                probe.add("hand_over (locks + guarded UPDATE)", elapsed)
                with probe.lock:
                    probe.hand_over_s.append(elapsed)

        queries.hand_over = hand_over_wrapper
        dialect = type(session_factory().kw["bind"].dialect)
        # (owner, attribute, label, split by lane): a name the code no longer has is skipped.
        for owner, attribute, label, split in (
            (queries, "record_results", "record_results", False),
            (queries, "claim_due_sends", "claim (query + DueSend)", False),
            (td, "_plan", "plan (usage query + plan_deliveries)", False),
            (td._Lane, "_message", "_Lane._message (token, ids, build)", False),
            (td, "build_message", "build_message", False),
            (transport.SMTPTransport, "deliver", "SMTPTransport.deliver", False),
            (transport, "_wire_bytes", "_wire_bytes (as_bytes)", False),
            (pg.Connection, "commit", "COMMIT", True),
            (dialect, "do_ping", "pool pre-ping", True),
        ):
            if hasattr(owner, attribute):
                timed = self.timed(label, getattr(owner, attribute), split=split)
                setattr(owner, attribute, timed)
            else:
                self.missing.append(f"{getattr(owner, '__name__', owner)}.{attribute}")

        run = td._Lane.run

        def run_wrapper(lane, handovers):
            probe.local.lane = True
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return run(lane, handovers)
            finally:
                ended = time.perf_counter()
                probe.local.lane = False
                probe.add("lane thread total", ended - started)
                probe.add("lane thread CPU", time.thread_time() - cpu)
                with probe.lock:
                    probe.lane_spans.append((started, ended))

        td._Lane.run = run_wrapper

        def classify(statement: str) -> str:
            if "pg_advisory_xact_lock" in statement:
                return "SQL advisory locks (incl. wait)"
            if "SET status = 'sending'" in statement:
                return "SQL hand-over UPDATE"
            if '"sentAt" = CASE' in statement:
                return "SQL record_results UPDATE"
            if "SKIP LOCKED" in statement:
                return "SQL claim"
            return "SQL other"

        @event.listens_for(Engine, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):
            conn.info.setdefault("bench_t0", []).append(time.perf_counter())

        @event.listens_for(Engine, "after_cursor_execute")
        def after(conn, cursor, statement, parameters, context, executemany):
            started = conn.info["bench_t0"].pop()
            probe.add(probe.where(classify(statement)), time.perf_counter() - started)

    def lanes_wall(self) -> float:
        """Seconds during which at least one lane ran (the union of the lanes' spans)."""
        total, end = 0.0, float("-inf")
        for start, stop in sorted(self.lane_spans):
            if stop > end:
                total += stop - max(start, end)
                end = stop
        return total

    def summary(self, sent: int) -> dict[str, Any]:
        per_send = {k: round(1e6 * v[1] / max(sent, 1), 1) for k, v in self.totals.items()}
        calls = {k: int(v[0]) for k, v in self.totals.items()}
        tenth = max(1, len(self.hand_over_s) // 10)
        first, last = self.hand_over_s[:tenth], self.hand_over_s[-tenth:]
        return {
            "us_per_send": dict(sorted(per_send.items(), key=lambda kv: -kv[1])),
            "calls": calls,
            "lanes_wall_s": self.lanes_wall(),
            "lane_runs": len(self.lane_spans),
            "not_patched": self.missing,
            "hand_over_us_first_10pct": round(1e6 * sum(first) / len(first), 1) if first else None,
            "hand_over_us_last_10pct": round(1e6 * sum(last) / len(last), 1) if last else None,
        }


class ThreadProfiles:
    """cProfile is per thread: one profile for the main thread, one per worker call, merged."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def wrap(self, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            profile = cProfile.Profile()
            with self.lock:
                self.profiles.append(profile)
            profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.disable()

        return wrapper

    def install(self) -> None:
        import anyio.to_thread

        import tasks.delivery as td

        run_sync = anyio.to_thread.run_sync

        async def run_sync_wrapper(func, *args, **kwargs):
            return await run_sync(self.wrap(func), *args, **kwargs)

        anyio.to_thread.run_sync = run_sync_wrapper
        td._Lane.run = self.wrap(td._Lane.run)

    def report(self, main: cProfile.Profile, path: Path, top: int = 25) -> dict[str, str]:
        stats = pstats.Stats(main)
        for profile in self.profiles:
            stats.add(profile)
        stats.dump_stats(path)
        out = {}
        for key in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(str(path), stream=text).sort_stats(key).print_stats(top)
            body = text.getvalue()
            for prefix in (str(ROOT) + "/", *(p + "/" for p in sys.path if "site-packages" in p)):
                body = body.replace(prefix, "")
            out[key] = body[body.find("   ncalls") :]
        return out


def child_flow(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured flow run; spec comes from the parent as JSON."""
    os.environ.update(
        DATABASE_URL=spec["database_url"],
        EMAIL_TRANSPORT="smtp",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(spec["smtp_port"]),
        SMTP_SECURITY="none",
        SMTP_MAX_CONNECTIONS=str(spec["max_connections"]),
        DELIVERY_HANDOVER_GROUP=str(spec["handover_group"]),
        UNSUBSCRIBE_SECRET=SECRET,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
    )
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD"):
        os.environ.pop(name, None)

    import resource

    from core.delivery.report import COLUMNS
    from flows.send_scheduled_emails import send_scheduled_emails
    from tasks.database import session_factory

    session_factory()  # connect and check the revision before the clock starts
    probe = Probe()
    if spec.get("probe", True):
        probe.install()
    profiles = main_profile = None
    if spec.get("profile"):
        profiles, main_profile = ThreadProfiles(), cProfile.Profile()
        profiles.install()
    n = spec["n"]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    smtp0, api0 = proc_cpu(spec["smtp_pid"]), proc_cpu(spec.get("prefect_server_pid"))
    pg0 = pg_cpu(spec.get("postmaster_pid"))
    busy0, total0 = machine_jiffies()
    started = time.perf_counter()
    if main_profile is not None:
        main_profile.enable()
    report = asyncio.run(
        send_scheduled_emails(
            as_of=datetime.now(UTC),
            campaign_id=CAMPAIGN,
            max_sends=n,
            batch_size=spec["batch_size"],
            max_wait_seconds=0,
            dry_run=False,
        )
    )
    if main_profile is not None:
        main_profile.disable()
    elapsed = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    busy1, total1 = machine_jiffies()
    smtp1, api1 = proc_cpu(spec["smtp_pid"]), proc_cpu(spec.get("prefect_server_pid"))
    pg1 = pg_cpu(spec.get("postmaster_pid"))
    counts = {column: report.total(column) for column in COLUMNS}
    sent = counts["sent"]

    def per_send_ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(1000 * (b - a) / max(sent, 1), 3)

    flow_cpu = usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime
    result = {
        "kind": "flow",
        "mailboxes": spec["mailboxes"],
        "connections": spec["max_connections"],
        "n": n,
        "batch_size": spec["batch_size"],
        "seconds": elapsed,
        "sends_per_s": sent / elapsed,
        "report": counts,
        "cpu_ms_per_send": {
            "flow_process": round(1000 * flow_cpu / max(sent, 1), 3),
            "smtp_server": per_send_ms(smtp0, smtp1),
            "postgres": per_send_ms(pg0, pg1),
            "prefect_api": per_send_ms(api0, api1),
        },
        "machine_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1),
        "probe": probe.summary(sent) if spec.get("probe", True) else None,
    }
    if profiles is not None:
        result["profile"] = profiles.report(main_profile, Path(spec["profile"]))
    return result


# --------------------------------------------------------------------------------------------
# Child: bare smtplib, the ceiling


def outgoing(i: int, now: datetime) -> Any:
    """Send i's OutgoingEmail exactly as a one-mailbox lane builds it."""
    from core.delivery.message import OutgoingEmail
    from core.delivery.unsubscribe import (
        load_secret,
        sign_token,
        unsubscribe_mailto,
        unsubscribe_url,
    )

    row, sender = content(i), MAILBOXES[0]
    token = sign_token(load_secret(SECRET, ROOT / ".data"), send_id(i))
    return OutgoingEmail(
        send_id=send_id(i),
        from_email=sender,
        from_name=SENDER_NAME,
        reply_to=None,
        to_email=row["email"],
        to_name=f"{row['first']} {row['last']}",
        subject=row["subject"],
        text_body=row["body"],
        html=False,
        date=now,
        message_id=f"<{send_id(i)}@sender.example>",
        in_reply_to=None,
        references=(),
        unsubscribe_url=unsubscribe_url(PUBLIC_BASE_URL, token),
        unsubscribe_mailto=unsubscribe_mailto(sender, token),
    )


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """One smtplib connection, sendmail() of n messages: prebuilt bytes, or built per message."""
    import email.policy
    import smtplib

    from core.delivery.message import build_message

    n, prebuilt = spec["n"], spec["mode"] == "prebuilt"
    now = datetime.now(UTC)
    emails = [outgoing(i, now) for i in range(n)]
    payloads = [build_message(e).as_bytes(policy=email.policy.SMTP) for e in emails]
    sizes = [len(p) for p in payloads]
    if not prebuilt:
        payloads = []
    connection = smtplib.SMTP("127.0.0.1", spec["smtp_port"], timeout=30)
    connection.ehlo()
    refused = 0
    cpu0, smtp0 = time.process_time(), proc_cpu(spec["smtp_pid"])
    started = time.perf_counter()
    for i, outgoing_email in enumerate(emails):
        if prebuilt:
            payload = payloads[i]
        else:
            payload = build_message(outgoing_email).as_bytes(policy=email.policy.SMTP)
        if connection.sendmail(MAILBOXES[0], [outgoing_email.to_email], payload):
            refused += 1
    elapsed = time.perf_counter() - started
    cpu, smtp1 = time.process_time() - cpu0, proc_cpu(spec["smtp_pid"])
    connection.quit()
    return {
        "kind": "bare",
        "mode": spec["mode"],
        "n": n,
        "refused": refused,
        "seconds": elapsed,
        "msgs_per_s": (n - refused) / elapsed,
        "client_cpu_us_per_msg": round(1e6 * cpu / n, 1),
        "server_cpu_us_per_msg": (
            round(1e6 * (smtp1 - smtp0) / n, 1) if None not in (smtp0, smtp1) else None
        ),
        "message_bytes_mean": round(sum(sizes) / len(sizes)),
    }


# --------------------------------------------------------------------------------------------
# Parent


PRODUCT_DIRS = ("core", "db", "tasks", "flows")


def code_version() -> dict[str, Any]:
    """The commit, the product files changed against it, and a digest of every product file,
    so a run that straddles another engineer's edit can be told apart."""
    import hashlib

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    digest = hashlib.sha256()
    for directory in PRODUCT_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--porcelain", "--", *PRODUCT_DIRS).splitlines(),
        "digest": digest.hexdigest()[:16],
    }


def load_triple() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin_url = server_url()
        self.db_name = f"cp_bench_delivery_{os.getpid()}"
        self.url = ""
        self.smtp: SMTPServerProcess | None = None
        self.prefect_api_url = ""
        self.prefect_server_pid: int | None = None
        self.postmaster_pid: int | None = None
        self.logs = Path(tempfile.mkdtemp(prefix="cp-bench-delivery-"))
        self.results: dict[str, Any] = {"runs": []}

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def settle(self, limit_s: float = 10.0) -> float:
        """Wait (up to limit_s) for two quiet half-seconds: the harness API server ingests the
        previous run's events for a while after it ends."""
        started, quiet = time.perf_counter(), 0
        while quiet < 2 and time.perf_counter() - started < limit_s:
            busy0, total0 = machine_jiffies()
            time.sleep(0.5)
            busy1, total1 = machine_jiffies()
            quiet = quiet + 1 if (busy1 - busy0) < 0.2 * max(total1 - total0, 1) else 0
        return time.perf_counter() - started

    def child(self, mode: str, spec: dict[str, Any], label: str) -> dict[str, Any]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        }
        settled = self.settle()
        argv = [sys.executable, str(Path(__file__).resolve()), f"--child-{mode}", json.dumps(spec)]
        log = self.logs / f"{mode}-{len(self.results['runs'])}.log"
        with log.open("w") as err:
            process = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        lines = [
            line for line in process.stdout.decode().splitlines() if line.startswith(RESULT_MARKER)
        ]
        if process.returncode != 0 or not lines:
            tail = "\n".join(log.read_text().splitlines()[-40:])
            raise RuntimeError(f"{mode} child failed ({process.returncode}); {log}:\n{tail}")
        result = json.loads(lines[-1][len(RESULT_MARKER) :])
        result.update(label=label, settle_seconds=round(settled, 1), loadavg_before=load_triple())
        self.results["runs"].append(result)
        return result

    def flow_run(
        self, mailboxes: int, connections: int, n: int, label: str, **extra: Any
    ) -> dict[str, Any]:
        code = code_version()
        seeded = seed_sends(self.url, n, mailboxes)
        accepted0 = self.smtp.accepted()
        spec = {
            "database_url": self.url,
            "smtp_port": self.smtp.port,
            "smtp_pid": self.smtp.pid,
            "max_connections": connections,
            "handover_group": self.args.handover_group,
            "mailboxes": mailboxes,
            "n": n,
            "batch_size": self.args.batch_size,
            "prefect_server_pid": self.prefect_server_pid,
            "postmaster_pid": self.postmaster_pid,
            **extra,
        }
        result = self.child("flow", spec, label)
        result["seed_seconds"] = round(seeded, 2)
        result["smtp_accepted"] = self.smtp.accepted() - accepted0
        result["statuses"], result["not_sent_reasons"] = status_counts(self.url)
        result["code"] = code_version()
        result["code_changed_during_run"] = result["code"] != code
        result["complete"] = result["statuses"] == {"sent": n} and result["smtp_accepted"] == n
        cpu = result["cpu_ms_per_send"]
        self.log(
            f"{label}: {n} sends in {result['seconds']:.1f} s = {result['sends_per_s']:.0f}/s;"
            f" CPU ms/send flow {cpu['flow_process']}, smtp {cpu['smtp_server']},"
            f" pg {cpu['postgres']}, api {cpu['prefect_api']};"
            f" machine {result['machine_busy_pct']}% busy"
            + ("" if result["complete"] else f" INCOMPLETE {result['not_sent_reasons']}")
        )
        return result

    def bare_run(self, mode: str, label: str) -> dict[str, Any]:
        spec = {"smtp_port": self.smtp.port, "smtp_pid": self.smtp.pid, "n": self.args.sends}
        result = self.child("bare", {**spec, "mode": mode}, label)
        self.log(
            f"{label}: {result['msgs_per_s']:.0f} msgs/s, client {result['client_cpu_us_per_msg']}"
            f" µs CPU/msg, server {result['server_cpu_us_per_msg']} µs CPU/msg,"
            f" {result['message_bytes_mean']} B/msg, {result['refused']} refused"
        )
        return result

    def measure(self) -> None:
        args = self.args
        self.flow_run(1, 1, args.warmup_sends, "warm-up (discarded)")
        for r in range(args.repeats):
            for mailboxes, connections in args.variant:
                label = f"flow {variant_key(mailboxes, connections)} #{r + 1}"
                self.flow_run(mailboxes, connections, args.sends, label)
                if (mailboxes, connections) == args.variant[0] and r == args.repeats - 1:
                    self.results["hand_over_explain"] = explain_hand_over(self.url)
            if not args.no_bare:
                self.bare_run("prebuilt", f"bare (a) prebuilt bytes #{r + 1}")
                self.bare_run("build", f"bare (b) build_message per message #{r + 1}")
        if args.profile:
            path = self.logs / "flow-1-mailbox.prof"
            mailboxes, connections = args.variant[0]
            label = f"profiled {variant_key(mailboxes, connections)} (discarded)"
            result = self.flow_run(
                mailboxes, connections, args.sends, label, profile=str(path), probe=False
            )
            self.results["profile"] = {"file": str(path), **result.pop("profile")}

    def run(self) -> dict[str, Any]:
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        from db.engine import upgrade

        self.results["loadavg_start"] = load_triple()
        self.results["code_at_start"] = code_version()
        self.url = create_database(self.admin_url, self.db_name)
        try:
            upgrade(self.url)
            version, self.postmaster_pid = server_facts(self.url)
            self.results["machine"] = machine_info(version)
            self.results["postgres_settings"] = pg_settings(self.url)
            self.results["database"] = make_url(self.url).render_as_string(hide_password=True)
            self.log(f"database {self.results['database']} (PostgreSQL {version})")
            self.smtp = SMTPServerProcess()
            self.log(f"SMTP server pid {self.smtp.pid} on 127.0.0.1:{self.smtp.port}")
            with prefect_test_harness(server_startup_timeout=90):
                self.prefect_api_url = PREFECT_API_URL.value()
                server = SubprocessASGIServer._instances.get(None)
                process = getattr(server, "server_process", None)
                self.prefect_server_pid = process.pid if process is not None else None
                self.log(f"Prefect harness at {self.prefect_api_url}; child logs in {self.logs}")
                self.measure()
        finally:
            if self.smtp is not None:
                self.smtp.stop()
            if not self.args.keep_db:
                drop_database(self.admin_url, self.db_name)
        self.results["loadavg_end"] = load_triple()
        self.results["code_at_end"] = code_version()
        self.results["code_changed_during_run"] = (
            self.results["code_at_start"] != self.results["code_at_end"]
        )
        self.results["summary"] = summarise(self.results)
        return self.results


# --------------------------------------------------------------------------------------------
# Summary


def variant_key(mailboxes: int, connections: int) -> str:
    return f"{mailboxes} mbox/{connections} conn"


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    runs = [r for r in results["runs"] if "discarded" not in r["label"]]
    summary: dict[str, Any] = {"flow": {}, "bare": {}, "ratios": {}, "breakdown_us_per_send": {}}
    for r in runs:
        if r["kind"] == "bare":
            summary["bare"].setdefault(r["mode"], []).append(r["msgs_per_s"])
    for mode, values in list(summary["bare"].items()):
        summary["bare"][mode] = {"median": median(values), "all": values}
    flows: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["kind"] == "flow":
            flows.setdefault(variant_key(r["mailboxes"], r["connections"]), []).append(r)
    for key, group in flows.items():
        rates = [r["sends_per_s"] for r in group]
        summary["flow"][key] = {
            "median": median(rates),
            "all": rates,
            "complete": all(r["complete"] for r in group),
            "cpu_ms_per_send": {
                k: median([r["cpu_ms_per_send"][k] for r in group])
                for k in group[0]["cpu_ms_per_send"]
            },
            "machine_busy_pct": median([r["machine_busy_pct"] for r in group]),
        }
        for mode, bare in summary["bare"].items():
            summary["ratios"][f"{key} / bare ({mode})"] = median(rates) / bare["median"]
        names = {name for r in group for name in r["probe"]["us_per_send"]}
        breakdown = {
            name: median([r["probe"]["us_per_send"].get(name, 0.0) for r in group])
            for name in names
        }
        breakdown["flow wall"] = median([1e6 / r["sends_per_s"] for r in group])
        breakdown["lanes wall (union of lane spans)"] = median(
            [1e6 * r["probe"]["lanes_wall_s"] / r["report"]["sent"] for r in group]
        )
        breakdown["hand_over, first 10% of calls (per call)"] = median(
            [r["probe"]["hand_over_us_first_10pct"] for r in group]
        )
        breakdown["hand_over, last 10% of calls (per call)"] = median(
            [r["probe"]["hand_over_us_last_10pct"] for r in group]
        )
        summary["breakdown_us_per_send"][key] = breakdown
    return summary


BREAKDOWN_ORDER = (
    ("flow wall", 0),
    ("lanes wall (union of lane spans)", 1),
    ("lane thread total", 1),
    ("lane thread CPU", 2),
    ("hand_over (locks + guarded UPDATE)", 2),
    ("SQL advisory locks (incl. wait)", 3),
    ("SQL hand-over UPDATE", 3),
    ("record_results", 2),
    ("SQL record_results UPDATE", 3),
    ("COMMIT", 2),
    ("pool pre-ping", 2),
    ("SQL other", 2),
    ("_Lane._message (token, ids, build)", 2),
    ("build_message", 3),
    ("SMTPTransport.deliver", 2),
    ("_wire_bytes (as_bytes)", 3),
    ("claim (query + DueSend)", 1),
    ("plan (usage query + plan_deliveries)", 1),
    ("COMMIT [outside lanes]", 1),
    ("pool pre-ping [outside lanes]", 1),
    ("SQL claim [outside lanes]", 1),
    ("SQL other [outside lanes]", 1),
    ("hand_over, first 10% of calls (per call)", 1),
    ("hand_over, last 10% of calls (per call)", 1),
)


def print_summary(results: dict[str, Any], args: argparse.Namespace) -> None:
    s = results["summary"]
    print(f"\nsend-scheduled-emails, n = {args.sends:,} sends, batch {args.batch_size}; medians")
    bare = s["bare"]
    for key, flow in s["flow"].items():
        verdict = "PASS" if flow["median"] >= 300 else "FAIL"
        rates = ", ".join(f"{v:.0f}" for v in flow["all"])
        done = "" if flow["complete"] else "  (INCOMPLETE runs!)"
        print(f"  flow, {key:17} {flow['median']:6.0f} sends/s  ({rates})  >= 300: {verdict}{done}")
    for mode, label in (("prebuilt", "(a) prebuilt bytes"), ("build", "(b) build_message")):
        if mode in bare:
            rates = ", ".join(f"{v:.0f}" for v in bare[mode]["all"])
            print(f"  bare smtplib {label:20} {bare[mode]['median']:6.0f} msgs/s  ({rates})")
    for key, ratio in s["ratios"].items():
        print(f"  {key:38} {100 * ratio:5.0f}%  >= 50%: {'PASS' if ratio >= 0.5 else 'FAIL'}")
    keys = list(s["breakdown_us_per_send"])
    if not keys:
        return
    print("\nwhere the time goes, µs per sent message (lane figures are thread-seconds: with")
    print("several lanes they add up to more than the wall time)")
    print(f"  {'':46}" + "".join(f"{k:>14}" for k in keys))
    shown = set()
    for name, depth in BREAKDOWN_ORDER:
        values = [s["breakdown_us_per_send"][k].get(name) for k in keys]
        if all(v is None for v in values):
            continue
        shown.add(name)
        cells = "".join(f"{v:14.1f}" if v is not None else f"{'-':>14}" for v in values)
        print(f"  {'  ' * depth + name:46}{cells}")
    for name in sorted({n for k in keys for n in s["breakdown_us_per_send"][k]} - shown):
        values = [s["breakdown_us_per_send"][k].get(name) for k in keys]
        cells = "".join(f"{v:14.1f}" if v is not None else f"{'-':>14}" for v in values)
        print(f"  {'  ' + name:46}{cells}")
    print(f"  {'CPU ms/send:':46}")
    for what in ("flow_process", "smtp_server", "postgres", "prefect_api"):
        values = [s["flow"][k]["cpu_ms_per_send"][what] for k in keys]
        cells = "".join(f"{v:14.3f}" if v is not None else f"{'-':>14}" for v in values)
        print(f"  {'  ' + what:46}{cells}")
    explain = results.get("hand_over_explain")
    if explain:
        print(
            f"\nHAND_OVER after a {args.sends:,}-send run: {explain['median_ms']:.2f} ms"
            " execution; what it reads:"
        )
        for scan in explain["scans"]:
            print(f"  {scan}")
    if results.get("code_changed_during_run"):
        print("\nWARNING: product code changed during the run:", results["code_at_start"], "->")
        print("        ", results["code_at_end"])
    profile = results.get("profile")
    if profile:
        print(f"\ncProfile of one 1-mailbox run, all threads merged ({profile['file']}):")
        print(profile["cumulative"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=5_000, help="sends per run (5,000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each variant (3)")
    parser.add_argument("--batch-size", type=int, default=500, help="flow batch_size (500)")
    parser.add_argument(
        "--variant",
        action="append",
        metavar="MAILBOXES:CONNECTIONS",
        help="sending mailboxes and SMTP_MAX_CONNECTIONS (repeatable); default 1:1 and 4:4",
    )
    parser.add_argument(
        "--handover-group",
        type=int,
        default=10,
        help="DELIVERY_HANDOVER_GROUP: sends per handover commit (10, the default setting)",
    )
    parser.add_argument("--warmup-sends", type=int, default=300, help="discarded first run")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare smtplib runs")
    parser.add_argument(
        "--profile", action="store_true", help="one more 1-mailbox run under cProfile"
    )
    parser.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--child-flow", help=argparse.SUPPRESS)
    parser.add_argument("--child-bare", help=argparse.SUPPRESS)
    parser.add_argument("--child-smtp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variant = [
        tuple(int(part) for part in v.split(":")) for v in (args.variant or ["1:1", "4:4"])
    ]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_smtp:
        child_smtp()
        return
    if args.child_flow:
        print(RESULT_MARKER + json.dumps(child_flow(json.loads(args.child_flow))), flush=True)
        return
    if args.child_bare:
        print(RESULT_MARKER + json.dumps(child_bare(json.loads(args.child_bare))), flush=True)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks still clean up
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    started = time.perf_counter()
    results = Bench(args).run()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    env = [f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"]
    if os.environ.get("DATABASE_URL"):
        url = make_url(os.environ["DATABASE_URL"]).render_as_string(hide_password=True)
        env.insert(0, f"DATABASE_URL={url}")
    python = os.path.relpath(sys.executable, ROOT)
    results["command"] = " ".join([*env, shlex.join([python, *sys.argv])])
    print_summary(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
