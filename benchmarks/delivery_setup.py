"""The delivery benchmark's world: the campaign and its due sends, what a run left behind, and
EXPLAIN ANALYZE of the statement hand_over_group() sends."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.orm import Session

from benchmarks.dependencies import HAND_OVER_SQL
from benchmarks.harness.database import (
    TABLES,
    capture_statements,
    explain_analyze,
    libpq,
    one_row,
    plan_ms,
)
from benchmarks.harness.machine import median
from core.delivery.lane import HandoverGuard
from core.mailboxes.mailbox_file import parse_mailbox_file
from db.base import utcnow
from db.engine import DatabaseConfig, make_engine, sessions_for, unit_of_work
from db.queries.delivery import hand_over_group, usage_today
from db.queries.mailboxes import add_mailboxes

SECRET = "bench-unsubscribe-secret-0123456789"
PUBLIC_BASE_URL = "https://app.sender.example"
CAMPAIGN = "bc1"
WORKSPACE = "bench-ws"
SENDER_NAME = "Sam Carter"
MAILBOXES = (
    "sam@sender.example",
    "alex@sender.example",
    "kim@sender.example",
    "lee@sender.example",
    *(f"box{i}@sender.example" for i in range(4, 32)),
)
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Zoë")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
COMPANY = ("Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Stark")
TOPIC = ("outbound pipeline", "sales onboarding", "renewal forecasts", "lead routing", "no-shows")


@dataclass(frozen=True)
class Account:
    """A sending mailbox's own login on the loopback server, as `--accounts` gives each one.

    The `Mailbox` row holds only the reference `env:<variable>`; the password reaches the flow's
    child process as that environment variable, and the SMTP server as its login table.
    """

    email: str
    variable: str
    password: str

    @property
    def reference(self) -> str:
        return f"env:{self.variable}"


def accounts(mailboxes: int) -> list[Account]:
    """The first `mailboxes` senders, each with its own login and password."""
    return [
        Account(email, f"BENCH_SMTP_PASSWORD_{i}", f"bench-pw-{i}-{email}")
        for i, email in enumerate(MAILBOXES[:mailboxes])
    ]


def add_mailbox_rows(url: str, logins: list[Account], smtp_port: int) -> None:
    """A `Mailbox` row per login, through the product's own `mailbox add` path, pointing at the
    loopback server without TLS; warm-up and daily limit out of reach, so only the pipeline's
    own cost sets the rate."""
    entries = [
        {
            "email": account.email,
            "name": SENDER_NAME,
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "security": "none",
                "username": account.email,
                "password": account.reference,
            },
            "dailyLimit": 1_000_000,
            # Warmed up long ago: the cap is min(dailyLimit, start + increment x days).
            "warmup": {"start": 1_000_000, "increment": 0, "startedAt": "2020-01-01"},
        }
        for account in logins
    ]
    document = parse_mailbox_file({"workspaceId": WORKSPACE, "mailboxes": entries})
    with unit_of_work(sessions_for(DatabaseConfig(url=SecretStr(url)))) as session:
        add_mailboxes(session, document, now=datetime.now(UTC))


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
    """Send i's id, sortable in seed order."""
    return f"bs{i:06d}"


def seed_sends(
    url: str, n: int, mailboxes: int, *, logins: list[Account] | None = None, smtp_port: int = 0
) -> float:
    """Empty the database, then one campaign with n sends due a minute ago, and with `logins`
    a `Mailbox` row for each sending mailbox; returns seconds."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None)
    due = now - timedelta(minutes=1)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        conn.execute(
            """INSERT INTO "Workspace" (id, name, "updatedAt") VALUES (%s, 'Bench', %s)""",
            [WORKSPACE, now],
        )
        conn.execute(
            """INSERT INTO "Campaign" (id, "workspaceId", name, status, "sendingRules",
                                       "updatedAt")
               VALUES (%s, %s, 'Delivery bench', 'active', %s, %s)""",
            [CAMPAIGN, WORKSPACE, json.dumps(sending_rules(mailboxes)), now],
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
                (f"bl{i}", WORKSPACE, r["email"], r["first"], r["last"], r["company"], now)
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
    if logins:
        add_mailbox_rows(url, logins, smtp_port)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
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


def sent_per_mailbox(url: str) -> dict[str, int]:
    """Sent messages by the mailbox they went from: how evenly the plan spread the lanes."""
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute(
            """SELECT mailbox, count(*) FROM "EmailSend" WHERE status = 'sent'
               GROUP BY mailbox ORDER BY mailbox"""
        ).fetchall()
    return {mailbox or "-": count for mailbox, count in rows}


def pg_settings(url: str) -> dict[str, str]:
    """The server settings that bear on commit cost, for the record."""
    names = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections")
    with psycopg.connect(libpq(url)) as conn:
        return {n: one_row(conn.execute(f"SHOW {n}"))[0] for n in names}


def explain_hand_over(url: str, runs: int = 3) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement hand_over_group() sends, after a whole run.

    The statement and its parameters are captured from a real hand_over_group() call on the last
    send, put back to `scheduled` under a bench token; every run is rolled back. It shows what
    the guard reads and writes for each handover once a mailbox has this many handovers today.
    """
    engine = make_engine(url)
    captured = capture_statements(engine, HAND_OVER_SQL)

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
                        guard = HandoverGuard(
                            campaign_id=CAMPAIGN,
                            mailbox=box,
                            sends=((sent_id, f"<{sent_id}@sender.example>"),),
                            day=day,
                            mailbox_limit=1_000_000,
                            campaign_limit=1_000_000,
                            min_gap=timedelta(0),
                        )
                        _, handed = hand_over_group(
                            session.connection(),
                            guard,
                            results=[],
                            token="bench-explain",
                            now=now,
                            lease=timedelta(60),
                        )
                        assert handed and captured, "hand_over_group refused the bench send"
                    else:  # the first EXPLAIN warms the cache and is discarded
                        statement, params = captured[0]
                        plans.append(explain_analyze(session.connection(), statement, params))
                    session.rollback()
    finally:
        engine.dispose()
    plans = plans[1:]
    ms = [plan_ms(p, "Execution Time") for p in plans]
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
