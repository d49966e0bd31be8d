"""A reply in the inbox wins (property 16): `send-scheduled-emails` alone, with no ingestion run
since the reply arrived, reads the sending mailbox's new mail before it hands over its sends.

Real PostgreSQL, a loopback SMTP server that requires the mailbox's own login, and a loopback
IMAP server holding the mailbox's folder.
"""

import asyncio
import threading
from contextvars import copy_context
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.delivery.accounts import MAILBOX_RECHECK
from core.engagement.config import read_new_mail
from core.engagement.report import IngestColumn, MailboxOutcome
from core.mailboxes.mailbox_file import parse_mailbox_file
from db.base import utcnow
from db.models import CampaignLead, EmailSend, EngagementEvent, Lead, Mailbox
from db.queries.mailboxes import add_mailboxes
from flows.ingest_engagement_events import ingest_engagement_events
from flows.send_scheduled_emails import send_scheduled_emails
from tasks import mailbox_replies
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.imap_server import LoopbackIMAP
from tests.support.run_records import run_artifacts, run_logs, run_with_artifacts
from tests.support.smtp_server import LoopbackSMTP

pytestmark = pytest.mark.flows

ALEX = "alex@seller.example"
SMTP_PW, IMAP_PW = "alex-smtp-SENTINEL-41d0", "alex-imap-SENTINEL-8be2"
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "mailboxes": [{"email": ALEX}],
}
MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "inbox"
# Ada's answer to <abc123@seller.example>, her step-1 email.
REPLY = (MAIL / "new" / "1764151201.M1P4242.reply-in-reply-to").read_bytes()
SEARCH_OR_FETCH = (" UID SEARCH ", " UID FETCH ")


@pytest.fixture
def smtp(run_settings, monkeypatch):
    with LoopbackSMTP(auth={"alex": SMTP_PW}) as server:
        run_settings.update(
            email_transport="smtp",
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="none",
            unsubscribe_secret="test-secret-at-least-16-chars",
            public_base_url="https://links.seller.example",
        )
        monkeypatch.setenv("ALEX_SMTP_PASSWORD", SMTP_PW)
        monkeypatch.setenv("ALEX_IMAP_PASSWORD", IMAP_PW)
        yield server


@pytest.fixture
def imap():
    with LoopbackIMAP(auth=(ALEX, IMAP_PW), uidvalidity=100) as server:
        yield server


def add_mailbox(session, workspace_id: str, smtp_port: int, imap_port: int, **imap) -> None:
    """Alex's row: his own SMTP login, and his IMAP folder (its fields overridable)."""
    entry = {
        "email": ALEX,
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "username": "alex",
            "password": "env:ALEX_SMTP_PASSWORD",
        },
        "imap": {
            "host": "127.0.0.1",
            "port": imap_port,
            "ssl": False,
            "username": ALEX,
            "password": "env:ALEX_IMAP_PASSWORD",
        }
        | imap,
        "dailyLimit": 1000,
        "warmup": {"start": 1000},
    }
    document = parse_mailbox_file({"workspaceId": workspace_id, "mailboxes": [entry]})
    add_mailboxes(session, document, now=utcnow())


def seed(sessions, smtp: LoopbackSMTP, imap: LoopbackIMAP, *, first_emails: int = 1, **imap_fields):
    """Follow-ups (step 2) due now for Ada and Bea, whose step 1 Alex sent three days ago, and
    `first_emails` leads whose step 1 is due now; returns the send ids by address and step."""
    ids: dict[tuple[str, int], str] = {}
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES)
        for name, message_id in (
            ("ada", "<abc123@seller.example>"),
            ("bea", "<bea1@seller.example>"),
        ):
            lead = factories.lead(session, ws, email=f"{name}@lead.example")
            factories.enrolment(session, camp, lead, currentStepOrder=3)
            first = factories.scheduled_send(
                session, camp, lead, status="sent", providerMessageId=message_id, mailbox=ALEX
            )
            first.sentAt = first.attemptedAt = utcnow() - timedelta(days=3)
            follow_up = factories.scheduled_send(
                session, camp, lead, step=2, scheduled_for=utcnow() - timedelta(minutes=1)
            )
            ids[(lead.email, 1)], ids[(lead.email, 2)] = first.id, follow_up.id
        for i in range(first_emails):
            lead = factories.lead(session, ws, email=f"new{i}@lead.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            send = factories.scheduled_send(
                session, camp, lead, scheduled_for=utcnow() - timedelta(minutes=1)
            )
            ids[(lead.email, 1)] = send.id
        add_mailbox(session, ws.id, smtp.port, imap.port, **imap_fields)
    return ids


def deliver(**params):
    return asyncio.run(run_with_artifacts(send_scheduled_emails, max_wait_seconds=0, **params))


def reply(sender: str, to_message_id: str, n: int) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ALEX
    message["Subject"] = "Re: Quick question"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = f"<reply-{n}@lead.example>"
    message["In-Reply-To"] = to_message_id
    message.set_content("Sounds good, call me on Thursday.")
    return message.as_bytes()


def searched_or_fetched(imap: LoopbackIMAP) -> list[str]:
    return [c for c in imap.commands if any(verb in c for verb in SEARCH_OR_FETCH)]


def checkpoint(sessions) -> tuple[int | None, int | None]:
    with sessions() as session:
        row = session.scalars(select(Mailbox)).one()
        return row.imapUidValidity, row.imapLastUid


def test_a_reply_in_the_inbox_cancels_the_follow_up_when_only_delivery_runs(smtp, imap, sessions):
    ids = seed(sessions, smtp, imap)
    # Ada answers after her follow-up was generated; no ingestion runs before delivery.
    imap.add("INBOX", REPLY, utcnow())
    report, _, _ = deliver()

    assert smtp.deliveries("ada@lead.example") == 0
    assert smtp.deliveries("bea@lead.example") == smtp.deliveries("new0@lead.example") == 1
    assert {m.auth_login for m in smtp.messages} == {"alex"}
    assert (report.total("sent"), report.total("cancelled")) == (2, 1)
    with sessions() as session:
        follow_up = session.get(EmailSend, ids[("ada@lead.example", 2)])
        assert (follow_up.status, follow_up.statusReason, follow_up.attempts) == (
            "cancelled",
            "replied",
            0,
        )
        ada = session.scalars(
            select(CampaignLead).join(Lead).where(Lead.email == "ada@lead.example")
        ).one()
        assert ada.status == "replied"
        (event,) = session.scalars(select(EngagementEvent)).all()
        assert (event.type, event.emailSendId) == ("reply", ids[("ada@lead.example", 1)])
    assert checkpoint(sessions) == (100, 1)

    # The scheduled ingestion comes later: the folder is unchanged for it, nothing is recorded
    # twice; read again from the start, the reply is a duplicate.
    later = asyncio.run(ingest_engagement_events(source="imap"))
    assert [m.outcome for m in later.mailboxes] == [MailboxOutcome.unchanged]
    with sessions.begin() as session:
        session.scalars(select(Mailbox)).one().imapUidValidity = None
    again = asyncio.run(ingest_engagement_events(source="imap"))
    assert (again.total(IngestColumn.new), again.total(IngestColumn.duplicate)) == (0, 1)
    with sessions() as session:
        assert len(session.scalars(select(EngagementEvent)).all()) == 1


def test_an_unchanged_inbox_costs_one_examine_per_batch(smtp, imap, sessions):
    seed(sessions, smtp, imap, first_emails=2)
    imap.add("INBOX", reply("someone@else.example", "<unrelated@else.example>", 1), utcnow())
    asyncio.run(ingest_engagement_events(source="imap"))  # the folder is read up to UID 1
    imap.commands.clear()

    report, _, _ = deliver(batch_size=2)
    assert report.total("sent") == 4
    # Two batches, one EXAMINE each: UIDNEXT says nothing is new, so no SEARCH and no FETCH.
    assert [c.split(" ", 2)[1] for c in imap.commands if " EXAMINE " in c] == ["EXAMINE"] * 2
    assert searched_or_fetched(imap) == []
    assert checkpoint(sessions) == (100, 1)


@pytest.mark.parametrize(
    ("imap_fields", "answer"),
    [
        ({"password": "env:ALEX_OLD_IMAP_PASSWORD"}, "AUTHENTICATIONFAILED"),
        ({"password": "env:ALEX_NOWHERE"}, "the environment variable ALEX_NOWHERE is not set"),
        ({"port": 1}, "imap.host=127.0.0.1:1: cannot connect"),
    ],
    ids=["login-refused", "password-unresolvable", "unreachable"],
)
def test_an_unreadable_inbox_holds_follow_ups_and_lets_first_emails_go(
    smtp, imap, sessions, monkeypatch, imap_fields, answer
):
    wrong = "alex-old-imap-SENTINEL-c9a7"
    monkeypatch.setenv("ALEX_OLD_IMAP_PASSWORD", wrong)
    ids = seed(sessions, smtp, imap, **imap_fields)
    imap.add("INBOX", REPLY, utcnow())  # unseen: Ada's follow-up must not go out
    report, _, run_id = deliver()

    assert [m.rcpt_tos for m in smtp.messages] == [("new0@lead.example",)]
    assert report.total("sent") == 1 and report.total("deferred") == 2
    with sessions() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        # Sending works: the mailbox stays active, and no checkpoint moved.
        assert (mailbox.status, mailbox.imapLastUid) == ("active", None)
        held = [session.get(EmailSend, ids[(f"{lead}@lead.example", 2)]) for lead in ("ada", "bea")]
    for send in held:
        assert (send.status, send.attempts, send.claimToken) == ("scheduled", 0, None)
        assert send.scheduledFor > utcnow() + MAILBOX_RECHECK - timedelta(minutes=5)
    (reason,) = {send.statusReason for send in held}
    assert reason.startswith("inbox not read for replies: ") and answer in reason
    assert [line["why"] for line in report.table() if line["deferred"]] == [
        f"deferred: {reason} ×2"
    ]

    logs = [log.message for log in asyncio.run(run_logs(run_id))]
    assert any(
        line.startswith(f"mailbox {ALEX} (workspace ") and "its follow-ups wait" in line
        for line in logs
    )
    shown = logs + [str(a.data) for a in asyncio.run(run_artifacts(run_id))]
    assert not [text for text in shown if IMAP_PW in text or wrong in text or SMTP_PW in text]


def test_delivery_and_ingestion_reading_one_inbox_at_once_record_each_reply_once(
    smtp, imap, sessions, monkeypatch
):
    ids = seed(sessions, smtp, imap, first_emails=0)
    imap.add("INBOX", REPLY, utcnow())
    imap.add("INBOX", reply("bea@lead.example", "<bea1@seller.example>", 2), utcnow())
    # Neither run records what it read before the other has read the same folder from the same
    # checkpoint: both hold both replies, so both record them and both move the checkpoint.
    both_read = threading.Barrier(2, timeout=30)

    def read_together(config, checkpoint):
        mail = read_new_mail(config, checkpoint)
        both_read.wait()
        return mail

    monkeypatch.setattr(mailbox_replies, "read_new_mail", read_together)
    reports = {}

    def one(name: str, flow, **params) -> None:
        reports[name] = asyncio.run(flow(**params))

    runs = [
        ("deliver", send_scheduled_emails, {"max_wait_seconds": 0}),
        ("ingest", ingest_engagement_events, {"source": "imap"}),
    ]
    # Each thread runs in a copy of this context: the test's run settings and result storage.
    threads = [
        threading.Thread(target=copy_context().run, args=(one, name, flow), kwargs=params)
        for name, flow, params in runs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Delivery claimed both follow-ups before it read, so its guard refused them.
    assert smtp.messages == [] and reports["deliver"].total("cancelled") == 2
    ingested = reports["ingest"]
    assert ingested.total(IngestColumn.new) + ingested.total(IngestColumn.duplicate) == 2
    with sessions() as session:
        events = session.scalars(select(EngagementEvent)).all()
        follow_ups = [session.get(EmailSend, ids[(f"{n}@lead.example", 2)]) for n in ("ada", "bea")]
    assert sorted(e.emailSendId for e in events) == sorted(
        [ids[("ada@lead.example", 1)], ids[("bea@lead.example", 1)]]
    )
    assert {(s.status, s.statusReason) for s in follow_ups} == {("cancelled", "replied")}
    assert checkpoint(sessions) == (100, 2)


def _answer(sender: str, to_message_id: str, body: str, *, auto: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ALEX
    message["Subject"] = "Re: Quick question"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = f"<answer-{abs(hash(body))}@lead.example>"
    message["In-Reply-To"] = to_message_id
    if auto:
        message["Auto-Submitted"] = "auto-replied"
    message.set_content(body)
    return message.as_bytes()


def test_an_absence_read_before_handover_moves_the_follow_up_instead(smtp, imap, sessions):
    ids = seed(sessions, smtp, imap)
    back = (utcnow() + timedelta(days=5)).date()
    notice = f"I am out of the office until {back.isoformat()}."
    notice_mail = _answer("ada@lead.example", "<abc123@seller.example>", notice, auto=True)
    imap.add("INBOX", notice_mail, utcnow())
    deliver()

    # Ada's follow-up was claimed before the inbox was read: it waits for her return instead.
    assert smtp.deliveries("ada@lead.example") == 0
    assert smtp.deliveries("bea@lead.example") == smtp.deliveries("new0@lead.example") == 1
    with sessions() as session:
        follow_up = session.get(EmailSend, ids[("ada@lead.example", 2)])
        assert follow_up.status == "scheduled" and follow_up.attempts == 0
        # Every hour of every day is in this campaign's window: the day after her return.
        assert follow_up.scheduledFor.date() == back + timedelta(days=1)
        assert follow_up.claimToken is None
        ada = session.scalars(
            select(CampaignLead).join(Lead).where(Lead.email == "ada@lead.example")
        ).one()
        assert ada.status == "active"
    # The next run leaves it waiting.
    deliver()
    assert smtp.deliveries("ada@lead.example") == 0


def test_a_meeting_request_read_before_handover_stops_the_follow_up(
    smtp, imap, sessions, run_settings
):
    with FakeOpenAI() as llm:
        run_settings.update(openai_api_key="sk-test", openai_base_url=llm.base_url)
        ids = seed(sessions, smtp, imap)
        body = "Sure, call me on Thursday. [intent:meeting_request]"
        imap.add("INBOX", _answer("ada@lead.example", "<abc123@seller.example>", body), utcnow())
        report, _, _ = deliver()
        assert llm.stats().requests == 1

    assert smtp.deliveries("ada@lead.example") == 0 and report.total("cancelled") == 1
    with sessions() as session:
        follow_up = session.get(EmailSend, ids[("ada@lead.example", 2)])
        assert (follow_up.status, follow_up.statusReason) == ("cancelled", "meeting_request")
        ada = session.scalars(
            select(CampaignLead).join(Lead).where(Lead.email == "ada@lead.example")
        ).one()
        assert (ada.status, ada.stopReason) == ("replied", "meeting_request")
