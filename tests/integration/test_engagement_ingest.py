"""Ingesting engagement events on real PostgreSQL: matching, dedup, quarantine and stop rules."""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.event import listen as event_listen
from sqlalchemy.event import remove as event_remove

from core.engagement.events import BounceKind, NormalisedEvent
from core.statuses import EngagementType
from db.base import utcnow
from db.models import (
    Campaign,
    CampaignLead,
    EmailSend,
    EngagementEvent,
    EngagementQuarantine,
    Lead,
    Suppression,
)
from db.queries.engagement import IngestResult, ingest_events
from tests import factories

AT = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
RULES = {"fromEmail": "alex@seller.example"}


def seed(sessions, *, rules=RULES, leads=("sarah@acme.example", "tom@acme.example")):
    """A campaign whose leads got step 1 (sent) and have step 2 scheduled; returns their ids."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=rules)
        ids = {}
        for address in leads:
            lead = factories.lead(session, ws, email=address)
            factories.enrolment(session, camp, lead, currentStepOrder=3)
            first = factories.scheduled_send(
                session, camp, lead, status="sent", providerMessageId=f"<{address}.1@seller>"
            )
            first.sentAt = first.attemptedAt = AT - timedelta(days=1)
            second = factories.scheduled_send(session, camp, lead, step=2)
            ids[address] = (first.id, second.id, camp.id, ws.id)
        return ids


def event(kind: EngagementType, **fields: Any) -> NormalisedEvent:
    values: dict[str, Any] = {
        "type": kind,
        "occurred_at": AT,
        "provider": "generic",
        "source": "test",
    }
    return NormalisedEvent(**(values | fields))


def by_type(result: IngestResult, outcome: str) -> Counter[str]:
    """How many events of each type had this outcome."""
    found: Counter[str] = Counter()
    for (_, kind, this), n in result.outcomes.items():
        if this == outcome:
            found[kind] += n
    return found


def ingest(sessions, events, limit=3):
    with sessions.begin() as session:
        return ingest_events(session, events, now=utcnow(), soft_bounce_limit=limit)


def test_a_reply_stops_its_lead_and_cancels_the_follow_up_once(sessions):
    ids = seed(sessions)
    first, second, *_ = ids["sarah@acme.example"]
    reply = event(
        EngagementType.reply,
        provider="mailbox",
        provider_event_id="<r1@acme.example>",
        references=("<other@x>", "<sarah@acme.example.1@seller>"),
        email="sarah@acme.example",
    )
    result = ingest(sessions, [reply])
    assert by_type(result, "new") == {"reply": 1} and result.stopped == {"replied": 1}
    assert result.cancelled == 1
    with sessions() as session:
        assert session.get(EmailSend, second).status == "cancelled"
        assert session.get(EmailSend, second).statusReason == "replied"
        lead_status = session.scalars(
            select(CampaignLead.status)
            .join(EmailSend, EmailSend.leadId == CampaignLead.leadId)
            .where(EmailSend.id == first)
        ).first()
        assert lead_status == "replied"
        tom = session.scalars(
            select(EmailSend.status).where(EmailSend.id == ids["tom@acme.example"][1])
        ).one()
        assert tom == "scheduled"  # no company-wide stop unless the campaign asks
        (recorded,) = session.scalars(select(EngagementEvent)).all()
        assert recorded.emailSendId == first and recorded.dedupeKey == reply.dedupe_key()
    again = ingest(sessions, [reply])
    assert by_type(again, "new") == {} and by_type(again, "duplicate") == {"reply": 1}
    assert again.cancelled == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EngagementEvent)) == 1


def test_a_company_reply_stops_colleagues_when_the_campaign_asks(sessions):
    ids = seed(
        sessions,
        rules=RULES | {"stopOnCompanyReply": True},
        leads=("sarah@acme.example", "tom@acme.example", "ann@other.example"),
    )
    reply = event(EngagementType.reply, email="sarah@acme.example", provider_event_id="<r@x>")
    result = ingest(sessions, [reply])
    assert result.stopped == {"replied": 1, "company_replied": 1} and result.cancelled == 2
    with sessions() as session:
        by_address = dict(
            session.execute(
                select(EmailSend.toEmail, EmailSend.status).where(
                    EmailSend.id.in_([v[1] for v in ids.values()])
                )
            ).all()
        )
    assert by_address == {
        "sarah@acme.example": "cancelled",
        "tom@acme.example": "cancelled",
        "ann@other.example": "scheduled",
    }


def test_colleagues_who_reply_in_the_same_chunk_are_each_replied_not_stopped(sessions):
    seed(
        sessions,
        rules=RULES | {"stopOnCompanyReply": True},
        leads=("sarah@acme.example", "tom@acme.example", "ann@acme.example"),
    )
    replies = [
        event(EngagementType.reply, email=address, provider_event_id=f"<r-{address}>")
        for address in ("sarah@acme.example", "tom@acme.example")
    ]
    result = ingest(sessions, replies)
    assert result.stopped == {"replied": 2, "company_replied": 1} and result.cancelled == 3
    with sessions() as session:
        status = dict(
            session.execute(
                select(Lead.email, CampaignLead.stopReason).join(
                    CampaignLead, CampaignLead.leadId == Lead.id
                )
            ).all()
        )
    assert status == {
        "sarah@acme.example": "replied",
        "tom@acme.example": "replied",
        "ann@acme.example": "company_replied",
    }


def test_a_reply_to_a_completed_lead_still_marks_it_replied(sessions):
    ids = seed(sessions, leads=("sarah@acme.example",))
    _first, second, _campaign_id, _ = ids["sarah@acme.example"]
    with sessions.begin() as session:
        session.get(EmailSend, second).status = "sent"
        for enrolment in session.scalars(select(CampaignLead)):
            enrolment.status = "completed"
    ingest(sessions, [event(EngagementType.reply, message_id="<sarah@acme.example.1@seller>")])
    with sessions() as session:
        assert session.scalars(select(CampaignLead.status)).one() == "replied"


def test_hard_bounce_unsubscribe_and_complaint_stop_and_suppress_the_address(sessions):
    ids = seed(sessions, leads=("a@x.example", "b@x.example", "c@x.example", "d@x.example"))
    result = ingest(
        sessions,
        [
            event(EngagementType.bounce, send_id=ids["a@x.example"][0], bounce_kind="hard"),
            event(EngagementType.unsubscribe, email="b@x.example"),
            event(EngagementType.complaint, message_id="<c@x.example.1@seller>"),
            event(EngagementType.open, send_id=ids["d@x.example"][0]),
            event(EngagementType.click, send_id=ids["d@x.example"][0], url="https://a.example"),
        ],
    )
    assert by_type(result, "new").total() == 5
    assert result.stopped == {"bounced": 1, "unsubscribed": 1, "complaint": 1}
    assert result.cancelled == 3
    with sessions() as session:
        suppressed = dict(session.execute(select(Suppression.email, Suppression.reason)).all())
        enrolments = dict(
            session.execute(
                select(EmailSend.toEmail, CampaignLead.status)
                .join(CampaignLead, CampaignLead.leadId == EmailSend.leadId)
                .where(EmailSend.id.in_([v[0] for v in ids.values()]))
            ).all()
        )
    assert suppressed == {
        "a@x.example": "bounced",
        "b@x.example": "unsubscribed",
        "c@x.example": "complaint",
    }
    assert enrolments == {
        "a@x.example": "bounced",
        "b@x.example": "unsubscribed",
        "c@x.example": "unsubscribed",
        "d@x.example": "active",
    }


def test_soft_bounces_bounce_the_lead_at_the_limit_counting_each_message_once(sessions):
    ids = seed(sessions, leads=("a@x.example",))
    first, second, *_ = ids["a@x.example"]
    with sessions.begin() as session:
        session.get(EmailSend, second).status = "sent"

    def soft(send_id: str, i: int) -> NormalisedEvent:
        return event(
            EngagementType.bounce,
            send_id=send_id,
            bounce_kind=BounceKind.soft,
            provider_event_id=f"soft-{i}",
        )

    # A provider retrying one message reports each deferral: the message counts once.
    assert ingest(sessions, [soft(first, 1), soft(first, 2)], limit=2).stopped == {}
    assert ingest(sessions, [soft(first, 3)], limit=2).stopped == {}
    result = ingest(sessions, [soft(first, 3), soft(second, 4)], limit=2)
    assert result.stopped == {"soft_bounces": 1} and by_type(result, "duplicate") == {"bounce": 1}
    with sessions() as session:
        enrolment = session.scalars(select(CampaignLead)).one()
        assert (enrolment.status, enrolment.softBounces) == ("bounced", 2)
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_events_for_unknown_messages_are_quarantined_once(sessions):
    seed(sessions)
    stray = event(EngagementType.open, message_id="<nobody@elsewhere>", provider_event_id="e1")
    result = ingest(sessions, [stray, stray])
    assert result.outcomes == {("test", "open", "quarantined"): 1, ("test", "open", "duplicate"): 1}
    assert ingest(sessions, [stray]).outcomes == {("test", "open", "duplicate"): 1}
    with sessions() as session:
        (row,) = session.scalars(select(EngagementQuarantine)).all()
        assert row.providerMessageId == "<nobody@elsewhere>" and "no EmailSend" in row.reason
        assert session.scalar(select(func.count()).select_from(EngagementEvent)) == 0
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1


def test_chunks_written_at_once_take_turns_stopping_and_count_a_soft_bounce_once(sessions):
    """Two chunks in flight (one run's, or two overlapping runs'), both past their insert before
    either stops a lead. Each has replies from the leads whose messages the other reports soft
    bounces for, and both report soft bounces of the same other messages. Without turns the two
    lock the same enrolments in opposite orders and deadlock, or each counts the soft bounce.
    """
    pairs = [(f"a{i}@x.example", f"b{i}@x.example") for i in range(30)]
    shared = [f"c{i}@x.example" for i in range(30)]
    ids = seed(sessions, leads=[a for pair in pairs for a in pair] + shared)

    def reply(address: str) -> NormalisedEvent:
        return event(
            EngagementType.reply,
            message_id=f"<{address}.1@seller>",
            provider_event_id=f"reply-{address}",
        )

    def soft(address: str, chunk: str) -> NormalisedEvent:
        return event(
            EngagementType.bounce,
            send_id=ids[address][0],
            bounce_kind=BounceKind.soft,
            provider_event_id=f"soft-{chunk}-{address}",
        )

    first = [reply(a) for a, _ in pairs] + [soft(b, "1") for _, b in pairs]
    second = [reply(b) for _, b in pairs] + [soft(a, "2") for a, _ in pairs]
    first += [soft(c, "1") for c in shared]
    second += [soft(c, "2") for c in shared]

    both_inserted = threading.Barrier(2, timeout=30)

    def after_insert(conn, cursor, statement, *args) -> None:
        if statement.lstrip().startswith("WITH event AS"):
            both_inserted.wait()

    engine = sessions.kw["bind"]
    event_listen(engine, "after_cursor_execute", after_insert)
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda c: ingest(sessions, c, limit=5), [first, second]))
    finally:
        event_remove(engine, "after_cursor_execute", after_insert)

    assert [r.stopped for r in results] == [{"replied": 30}, {"replied": 30}]
    with sessions() as session:
        enrolments = {
            email: (status, soft_bounces)
            for email, status, soft_bounces in session.execute(
                select(Lead.email, CampaignLead.status, CampaignLead.softBounces).join(
                    CampaignLead, CampaignLead.leadId == Lead.id
                )
            )
        }
    assert {enrolments[a] for pair in pairs for a in pair} == {("replied", 1)}
    # Two chunks, two deferral reports of one message: it counts once.
    assert {enrolments[c] for c in shared} == {("active", 1)}
