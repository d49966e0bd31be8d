"""Acting on classified replies on real PostgreSQL: one classification row per event, and only a
row inserted now acts; a reschedule takes a claimed follow-up and a claimed lead away from the
runs that hold them; a stop wins over an absence read with it."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.engagement.events import NormalisedEvent
from core.replies.config import ReplyPolicy
from core.replies.intent import Classification, ClassificationMethod, Intent, ReplyIntent
from core.replies.reply_text import ReplyContent
from core.statuses import EngagementType
from db.base import utcnow
from db.models import CampaignLead, EmailSend, EngagementEvent, ReplyClassification
from db.queries.engagement import ingest_events
from db.queries.replies import NewReply, act_on_replies
from tests.integration.test_engagement_ingest import AT, event, seed

POLICY = ReplyPolicy()


def _llm(intent: Intent, **fields) -> Classification:
    return Classification(
        intent=ReplyIntent(intent=intent, confidence=0.9, summary="s", **fields),
        method=ClassificationMethod.llm,
        model="gpt-4o-mini",
    )


def _reply_event(address: str, n: int = 1, *, text: str = "hi") -> NormalisedEvent:
    return event(
        EngagementType.reply,
        provider="mailbox",
        provider_event_id=f"<r{n}@{address}>",
        email=address,
        references=(f"<{address}.1@seller>",),
        reply=ReplyContent(text=text),
    )


def test_a_classification_row_acts_once_even_when_offered_twice(sessions):
    ids = seed(sessions, leads=("sarah@acme.example",))
    first, follow_up, *_ = ids["sarah@acme.example"]
    with sessions.begin() as session:
        session.add(
            EngagementEvent(id="evt-1", emailSendId=first, type="auto_reply", occurredAt=AT)
        )
    reply = NewReply(
        event_id="evt-1",
        send_id=first,
        type=EngagementType.auto_reply,
        occurred_at=AT,
        classification=_llm(Intent.out_of_office),
        text="",
    )
    with sessions.begin() as session:
        done = act_on_replies(session, [reply], policy=POLICY, now=utcnow())
        assert done.actions == {"rescheduled": 1}
        moved = session.get(EmailSend, follow_up).scheduledFor
    with sessions.begin() as session:
        # The same event again (a retried task, an overlapping run): no row, no action.
        again = act_on_replies(session, [reply], policy=POLICY, now=utcnow() + timedelta(days=1))
        assert not again.actions and not again.intents
    with sessions() as session:
        assert session.get(EmailSend, follow_up).scheduledFor == moved
        assert session.scalar(select(func.count()).select_from(ReplyClassification)) == 1


def test_the_database_refuses_a_second_classification_of_one_event(sessions):
    ids = seed(sessions, leads=("sarah@acme.example",))
    with sessions.begin() as session:
        session.add(
            EngagementEvent(
                id="evt-1", emailSendId=ids["sarah@acme.example"][0], type="reply", occurredAt=AT
            )
        )
    row = {
        "engagementEventId": "evt-1",
        "intent": "other",
        "confidence": 0.0,
        "summary": "s",
        "method": "rules",
        "action": "stopped",
    }
    with sessions.begin() as session:
        session.add(ReplyClassification(**row))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(ReplyClassification(**row))


def test_a_reschedule_takes_the_claims_of_the_runs_holding_the_lead(sessions):
    ids = seed(sessions, leads=("sarah@acme.example",))
    _, follow_up, *_ = ids["sarah@acme.example"]
    with sessions.begin() as session:
        send = session.get(EmailSend, follow_up)
        send.claimToken, send.claimedBy = "delivery-token", "delivery-run"
        send.claimedUntil = utcnow() + timedelta(minutes=10)
        enrolment = session.scalars(select(CampaignLead)).one()
        enrolment.claimToken, enrolment.claimedBy = "generation-token", "generation-run"
        enrolment.nextScheduledDate = utcnow() + timedelta(days=1)
    absent = _reply_event("sarah@acme.example", text="Out of office.")
    classified = {absent.dedupe_key(): _llm(Intent.out_of_office)}
    with sessions.begin() as session:
        ingest_events(session, [absent], now=utcnow(), soft_bounce_limit=3, classified=classified)
    with sessions() as session:
        send = session.get(EmailSend, follow_up)
        enrolment = session.scalars(select(CampaignLead)).one()
        # Both runs' fenced writes now touch nothing; the lead waits for the default pause.
        assert send.claimToken is None and enrolment.claimToken is None
        assert send.scheduledFor >= utcnow() + timedelta(days=6)
        assert enrolment.nextScheduledDate > send.scheduledFor


@pytest.mark.parametrize("absence_first", [True, False])
def test_a_stop_wins_over_an_absence_in_one_chunk(sessions, absence_first):
    ids = seed(sessions, leads=("sarah@acme.example",))
    _, follow_up, *_ = ids["sarah@acme.example"]
    absent = _reply_event("sarah@acme.example", 1, text="Out of office.")
    answer = _reply_event("sarah@acme.example", 2, text="Let's talk!")
    later = timedelta(hours=1)
    if absence_first:
        answer = answer.model_copy(update={"occurred_at": AT + later})
    else:
        absent = absent.model_copy(update={"occurred_at": AT + later})
    classified = {
        absent.dedupe_key(): _llm(Intent.out_of_office),
        answer.dedupe_key(): _llm(Intent.interested),
    }
    with sessions.begin() as session:
        result = ingest_events(
            session, [answer, absent], now=utcnow(), soft_bounce_limit=3, classified=classified
        )
    assert result.stopped == {"interested": 1}
    assert [i.intent for i in result.replies.interested] == ["interested"]
    with sessions() as session:
        assert session.get(EmailSend, follow_up).status == "cancelled"
        enrolment = session.scalars(select(CampaignLead)).one()
        assert (enrolment.status, enrolment.stopReason) == ("replied", "interested")


def test_a_reply_without_a_classification_is_decided_by_the_rules_as_it_is_recorded(sessions):
    seed(sessions, leads=("sarah@acme.example",))
    asked_out = _reply_event("sarah@acme.example", text="Please remove me from your list.")
    with sessions.begin() as session:
        result = ingest_events(session, [asked_out], now=utcnow(), soft_bounce_limit=3)
    assert result.replies.intents == {"unsubscribe": 1}
    with sessions() as session:
        row = session.scalars(select(ReplyClassification)).one()
        assert (row.intent, row.method, row.action) == ("unsubscribe", "rules", "unsubscribed")
        assert session.scalars(select(CampaignLead.status)).one() == "unsubscribed"
