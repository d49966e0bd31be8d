"""`ingest-engagement-events` under the Prefect harness: files, inbound mail, the webhook inbox."""

import asyncio
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.engagement.report import IngestColumn
from db.base import utcnow
from db.models import (
    CampaignLead,
    EmailSend,
    EngagementEvent,
    EngagementInbox,
    EngagementQuarantine,
    Suppression,
)
from flows.ingest_engagement_events import ingest_engagement_events
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.flows.test_send_scheduled_emails import RULES

pytestmark = pytest.mark.flows

MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "inbox"


def seed(sessions, address: str, message_id: str) -> tuple[str, str]:
    """A lead whose step 1 was sent with message_id and whose step 2 is due now."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES)
        lead = factories.lead(session, ws, email=address)
        factories.enrolment(session, camp, lead, currentStepOrder=3)
        first = factories.scheduled_send(
            session, camp, lead, status="sent", providerMessageId=message_id
        )
        first.sentAt = first.attemptedAt = utcnow() - timedelta(days=3)
        second = factories.scheduled_send(
            session, camp, lead, step=2, scheduled_for=utcnow() - timedelta(minutes=1)
        )
        return first.id, second.id


def run(**params):
    return asyncio.run(ingest_engagement_events(**params))


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_reply_in_inbound_mail_stops_the_follow_up_before_delivery(
    run_settings, sessions, smtp, tmp_path
):
    first, follow_up = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    inbox = tmp_path / "inbox"
    for folder in ("cur", "new", "tmp"):
        (inbox / folder).mkdir(parents=True)
    shutil.copy(MAIL / "new" / "1764151201.M1P4242.reply-in-reply-to", inbox / "new")
    report = run(source="mailbox", path=str(inbox))
    assert report.total(IngestColumn.new) == 1 and report.stopped == {"replied": 1}
    with sessions() as session:
        assert session.get(EmailSend, follow_up).status == "cancelled"
        assert session.scalars(select(CampaignLead.status)).one() == "replied"
        (reply,) = session.scalars(select(EngagementEvent)).all()
        assert (reply.type, reply.emailSendId) == ("reply", first)
    delivered = asyncio.run(send_scheduled_emails())
    assert delivered.total("sent") == 0 and smtp.messages == []


def test_the_fixture_mail_folder_is_ingested_once_with_the_rest_quarantined(run_settings, sessions):
    seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    first = run(source="mailbox", path=str(MAIL))
    # Ada's reply, and an out-of-office that refers to her message (recorded, stops nothing).
    assert first.total(IngestColumn.new) == 2 and first.malformed_total == 1
    assert first.total(IngestColumn.quarantined) >= 5
    assert {row.type for row in first.rows.values()} >= {"reply", "auto_reply", "bounce"}
    events, quarantined = count(sessions, EngagementEvent), count(sessions, EngagementQuarantine)
    again = run(source="mailbox", path=str(MAIL))
    assert again.total(IngestColumn.new) == 0 and again.total(IngestColumn.quarantined) == 0
    seen = first.total(IngestColumn.new) + first.total(IngestColumn.quarantined)
    assert again.total(IngestColumn.duplicate) == seen
    assert (count(sessions, EngagementEvent), count(sessions, EngagementQuarantine)) == (
        events,
        quarantined,
    )


def test_an_event_file_is_idempotent_and_reports_bad_lines(run_settings, sessions, tmp_path):
    first, _ = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    at = utcnow().isoformat()
    lines = [
        {"type": "open", "occurredAt": at, "emailSendId": first, "eventId": "o1"},
        {
            "type": "click",
            "occurredAt": at,
            "messageId": "abc123@seller.example",
            "url": "https://pipeline.example/x",
            "eventId": "c1",
        },
        "not json at all",
        {"type": "teleport", "occurredAt": at, "email": "ada@lead.example"},
        {"type": "open", "occurredAt": at, "messageId": "<nobody@elsewhere>", "eventId": "q1"},
        {"type": "unsubscribe", "occurredAt": at, "email": "ada@lead.example", "eventId": "u1"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    dry = run(source="file", path=str(path), dry_run=True)
    assert dry.total(IngestColumn.new) == 3 and count(sessions, EngagementEvent) == 0
    report = run(source="file", path=str(path))
    assert report.total(IngestColumn.new) == 3 and report.total(IngestColumn.quarantined) == 1
    assert [(m.line, m.reason.split(":")[0]) for m in report.malformed] == [
        (3, report.malformed[0].reason.split(":")[0]),
        (4, report.malformed[1].reason.split(":")[0]),
    ]
    assert "teleport" in report.malformed[1].reason
    assert report.stopped == {"unsubscribed": 1}
    with sessions() as session:
        assert session.scalars(select(Suppression.email)).all() == ["ada@lead.example"]
    again = run(source="file", path=str(path))
    assert again.total(IngestColumn.new) == 0 and again.total(IngestColumn.duplicate) == 4
    assert count(sessions, EngagementEvent) == 3


def test_the_webhook_inbox_is_drained_and_marked(run_settings, sessions):
    first, follow_up = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    with sessions.begin() as session:
        session.add(
            EngagementInbox(
                provider="mailgun",
                payload={
                    "signature": {"timestamp": "1", "token": "t", "signature": "s"},
                    "event-data": {
                        "event": "failed",
                        "severity": "permanent",
                        "timestamp": utcnow().timestamp(),
                        "id": "mg-1",
                        "recipient": "ada@lead.example",
                        "user-variables": {"send_id": first},
                        "delivery-status": {"code": 550, "message": "5.1.1 no such user"},
                    },
                },
            )
        )
    report = run()
    assert report.total(IngestColumn.new) == 1 and report.stopped == {"bounced": 1}
    with sessions() as session:
        inbox = session.scalars(select(EngagementInbox)).one()
        assert inbox.processedAt is not None and inbox.error is None
        assert session.get(EmailSend, follow_up).status == "cancelled"
    assert run().total(IngestColumn.new) == 0  # processed payloads are not read again
