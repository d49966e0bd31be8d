"""`send-scheduled-emails-mailboxes`: one line per sending mailbox of a run, with the run's counts,
today's cap and use, the last 7 days' health and the mailbox's status; a dry run shows the same
table from its plan. Real PostgreSQL, a loopback SMTP server that requires AUTH."""

import asyncio
import json
from datetime import datetime, time, timedelta

import pytest

from db.base import utcnow
from db.models import EngagementEvent
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.support.run_records import run_with_artifacts
from tests.support.smtp_server import LoopbackSMTP

pytestmark = pytest.mark.flows

ALEX, BOB, SAM = "alex@seller.example", "bob@seller.example", "sam@seller.example"
MAILBOX_PW, RELAY_PW = "mailbox-pw-3f1c", "relay-pw-8d2e"
PAUSED = "complaints at 0.4%, checked by hand"
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
}


@pytest.fixture
def smtp(run_settings, monkeypatch):
    """One server: each `Mailbox` row's own login, and the global SMTP_* one for the others."""
    with LoopbackSMTP(auth={ALEX: MAILBOX_PW, BOB: MAILBOX_PW, "relay": RELAY_PW}) as server:
        run_settings.update(
            email_transport="smtp",
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="none",
            smtp_username="relay",
            smtp_password=RELAY_PW,
            unsubscribe_secret="test-secret-at-least-16-chars",
            public_base_url="https://links.seller.example",
        )
        monkeypatch.setenv("TEST_SMTP_PASSWORD", MAILBOX_PW)
        yield server


def seed(sessions, port: int) -> None:
    """Alex (row, active, warm-up cap 3 today) and Bob (row, paused) rotate for one campaign;
    Sam (no row) sends another's. Five new leads are due for Alex; Bob wrote to two leads two
    days ago, one of whom complained and the other's follow-up is due (it stays with Bob)."""
    now = utcnow()
    two_days_ago = now - timedelta(days=2)
    with sessions.begin() as session:
        ws = factories.workspace(session)
        rotating = factories.campaign(
            session,
            ws,
            steps=2,
            sendingRules=RULES | {"mailboxes": [{"email": ALEX}, {"email": BOB}]},
        )
        single = factories.campaign(
            session, ws, steps=1, sendingRules=RULES | {"fromEmail": SAM, "mailboxDailyLimit": 7}
        )
        alex = factories.mailbox(session, ws.id, ALEX, smtp_port=port)
        # Started yesterday (midnight UTC, as `mailbox add` stores it): day 1 of 2 + 1 a day.
        yesterday = datetime.combine(now.date() - timedelta(days=1), time(), now.tzinfo)
        alex.warmupStart, alex.warmupIncrement, alex.warmupStartedAt = 2, 1, yesterday
        bob = factories.mailbox(session, ws.id, BOB, smtp_port=port)
        bob.warmupStart, bob.warmupIncrement, bob.status, bob.statusReason = 10, 0, "paused", PAUSED

        def lead(i: int, campaign=rotating):
            row = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, campaign, row, currentStepOrder=2)
            return row

        for i in range(5):
            factories.scheduled_send(
                session, rotating, lead(i), scheduled_for=now - timedelta(minutes=10 - i)
            )
        complained, waiting = (
            factories.scheduled_send(
                session,
                rotating,
                lead(i),
                status="sent",
                mailbox=BOB,
                providerMessageId=f"<old{i}@seller.example>",
                scheduled_for=two_days_ago,
                attemptedAt=two_days_ago,
                sentAt=two_days_ago,
            )
            for i in (5, 6)
        )
        session.add(
            EngagementEvent(
                emailSendId=complained.id,
                type="complaint",
                occurredAt=now - timedelta(days=1),
                dedupeKey=f"test:{complained.id}",
            )
        )
        follow_up_to = session.get(factories.Lead, waiting.leadId)
        factories.scheduled_send(session, rotating, follow_up_to, step=2, scheduled_for=now)
        factories.scheduled_send(session, single, lead(7, single), scheduled_for=now)


def mailbox_table(**params):
    """The run's per-mailbox table, by address."""
    _, artifacts, _ = asyncio.run(
        run_with_artifacts(send_scheduled_emails, max_wait_seconds=0, **params)
    )
    data = artifacts["send-scheduled-emails-mailboxes"].data
    rows = json.loads(data) if isinstance(data, str) else data
    return {row["mailbox"]: row for row in rows}


def pick(row: dict, *names: str) -> dict:
    return {name: row[name] for name in names}


FIGURES = ("sent", "deferred", "why", "bounced", "cap_today", "used_today")
HEALTH = (
    "sends_7d",
    "hard_bounces_7d",
    "hard_bounce_rate_7d",
    "complaints_7d",
    "complaint_rate_7d",
)


def test_each_mailbox_of_the_run_with_its_counts_cap_health_and_status(smtp, sessions):
    seed(sessions, smtp.port)
    smtp.reject_rcpt("lead1@buyer.example", "550 5.1.1 User unknown")

    # The dry run's table is its plan's: nothing counted against today yet.
    planned = mailbox_table(dry_run=True)
    assert smtp.messages == []
    assert list(planned) == [ALEX, BOB, SAM]
    assert pick(planned[ALEX], *FIGURES, "sends_7d", "hard_bounce_rate_7d") == {
        "sent": 3,
        "deferred": 2,
        "why": "mailbox daily limit (3) reached ×2",
        "bounced": 0,
        "cap_today": 3,
        "used_today": 0,
        "sends_7d": 0,
        "hard_bounce_rate_7d": "-",  # nothing sent in 7 days: no rate
    }
    assert pick(planned[SAM], "sent", "cap_today", "used_today") == {
        "sent": 1,
        "cap_today": 7,
        "used_today": 0,
    }

    table = mailbox_table()
    assert list(table) == [ALEX, BOB, SAM]
    alex, bob, sam = table.values()
    assert pick(alex, "login", "status", "reason") == {
        "login": "mailbox row",
        "status": "active",
        "reason": "",
    }
    # lead0 and lead2 sent, lead1 refused (5xx): three handovers against Alex's cap of 3.
    assert pick(alex, *FIGURES, *HEALTH) == {
        "sent": 2,
        "deferred": 2,
        "why": "mailbox daily limit (3) reached ×2",
        "bounced": 1,
        "cap_today": 3,
        "used_today": 3,
        "sends_7d": 3,
        "hard_bounces_7d": 1,
        "hard_bounce_rate_7d": "33.3%",
        "complaints_7d": 0,
        "complaint_rate_7d": "0.0%",
    }
    assert pick(bob, "login", "status", "reason") == {
        "login": "mailbox row",
        "status": "paused",
        "reason": PAUSED,
    }
    assert pick(bob, *FIGURES, *HEALTH) == {
        "sent": 0,
        "deferred": 1,
        "why": f"mailbox paused: {PAUSED} ×1",
        "bounced": 0,
        "cap_today": 10,
        "used_today": 0,
        "sends_7d": 2,
        "hard_bounces_7d": 0,
        "hard_bounce_rate_7d": "0.0%",
        "complaints_7d": 1,
        "complaint_rate_7d": "50.0%",
    }
    assert pick(sam, "login", "status", "reason", *FIGURES, "sends_7d") == {
        "login": "global SMTP_*",
        "status": "-",
        "reason": "",
        "sent": 1,
        "deferred": 0,
        "why": "",
        "bounced": 0,
        "cap_today": 7,
        "used_today": 1,
        "sends_7d": 1,
    }
    assert {m.auth_login for m in smtp.messages} == {ALEX, "relay"}


def test_a_run_with_nothing_due_says_so(smtp, sessions):
    assert mailbox_table() == {"(none used)": {"mailbox": "(none used)"}}
