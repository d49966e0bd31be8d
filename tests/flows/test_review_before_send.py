"""Review before send, end to end: `process-campaign-sends` writes messages that wait for a
person, a person approves (perhaps editing) or rejects them as the web app does, the next
generation run releases or holds them, and `send-scheduled-emails` delivers only what was
approved, to a loopback SMTP server, on real PostgreSQL."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.generation.report import CampaignCounts
from db.base import utcnow
from db.models import CampaignLead, EmailSend, GeneratedMessage, SequenceStep
from flows.process_campaign_sends import process_campaign_sends
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import default_responder, user_text

pytestmark = pytest.mark.flows

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromName": "Alex",
    "fromEmail": "alex@seller.example",
    "linkAllowlist": ["seller.example"],
    "review": "all",
}


def seed(sessions, n: int, *, rules: dict | None = None, steps: int = 2) -> str:
    """n leads due now in a campaign whose messages need review."""
    start = utcnow() - timedelta(minutes=5)
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(
            session, ws, steps=steps, sendingRules=rules or RULES, goal="Book calls"
        )
        for i in range(n):
            lead = factories.lead(
                session, ws, email=f"lead{i}@buyer.example", companyName=f"Company {i}"
            )
            # A second apart, so they are claimed (and counted for review) in this order.
            factories.enrolment(session, camp, lead, due=start + timedelta(seconds=i))
        return camp.id


def generate(campaign_id: str, **params) -> CampaignCounts:
    """One generation run for the campaign; its line of counts (zeros when it did nothing)."""
    counts = asyncio.run(process_campaign_sends(as_of=utcnow(), campaign_id=campaign_id, **params))
    return counts.get(campaign_id, CampaignCounts(campaign_id=campaign_id))


def deliver(campaign_id: str):
    return asyncio.run(send_scheduled_emails(campaign_id=campaign_id, max_wait_seconds=0))


def step_one(sessions) -> list[tuple[GeneratedMessage, EmailSend, CampaignLead]]:
    """Each lead's step-1 message, its send and its enrolment, by lead address."""
    with sessions() as session:
        rows = session.execute(
            select(GeneratedMessage, EmailSend, CampaignLead)
            .join(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .join(
                CampaignLead,
                (CampaignLead.campaignId == EmailSend.campaignId)
                & (CampaignLead.leadId == EmailSend.leadId),
            )
            .join(SequenceStep, SequenceStep.id == EmailSend.stepId)
            .where(SequenceStep.stepOrder == 1)
            .order_by(EmailSend.toEmail)
        ).all()
    return [tuple(row) for row in rows]


def as_the_web_app(sessions, message_id: str, **values) -> None:
    """What the web app writes: a status, perhaps an edited subject or body, perhaps a note."""
    with sessions.begin() as session:
        session.execute(
            update(GeneratedMessage).where(GeneratedMessage.id == message_id).values(**values)
        )


def test_nothing_is_sent_before_approval_and_the_lead_waits_at_its_step(
    run_settings, smtp, sessions
):
    campaign_id = seed(sessions, 2)

    counts = generate(campaign_id)
    assert (counts.scheduled, counts.awaiting_review) == (2, 2)
    for message, send, lead in step_one(sessions):
        assert message.status == "pending_review"
        assert message.reviewReason == "every message is reviewed (review: all)"
        assert (send.status, send.scheduledFor) == ("scheduled", None)
        assert send.statusReason == "awaiting review: every message is reviewed (review: all)"
        assert (lead.status, lead.currentStepOrder, lead.nextScheduledDate) == ("active", 1, None)

    # Neither a delivery run nor another generation run moves anything on.
    assert deliver(campaign_id).total("sent") == 0
    again = generate(campaign_id)
    assert (again.claimed, again.released) == (0, 0)
    assert smtp.messages == []
    assert [s.scheduledFor for _, s, _ in step_one(sessions)] == [None, None]


def test_an_approved_edit_is_sent_as_edited_and_the_lead_moves_on(run_settings, smtp, sessions):
    campaign_id = seed(sessions, 2)
    generate(campaign_id)
    (edited, edited_send, _), (untouched, untouched_send, _) = step_one(sessions)
    as_the_web_app(
        sessions,
        edited.id,
        status="approved",
        subject="  A better subject  ",
        body="Hi Sarah,\r\n\r\nRewritten by a person: https://seller.example/demo\r\n\r\nAlex",
    )

    counts = generate(campaign_id)

    assert (counts.released, counts.sent_back, counts.claimed) == (1, 0, 0)
    rows = {m.id: (m, s, lead) for m, s, lead in step_one(sessions)}
    message, send, lead = rows[edited.id]
    # The text the gate checked is what is kept: line endings and edges normalised.
    assert message.subject == "A better subject"
    assert message.body == "Hi Sarah,\n\nRewritten by a person: https://seller.example/demo\n\nAlex"
    assert send.scheduledFor is not None and send.statusReason is None
    assert send.claimToken is None
    assert lead.currentStepOrder == 2 and lead.nextScheduledDate == send.scheduledFor + timedelta(
        days=3
    )
    assert rows[untouched.id][1].scheduledFor is None  # still awaiting its review

    assert deliver(campaign_id).total("sent") == 1
    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == (edited_send.toEmail,)
    assert received.message["Subject"] == "A better subject"
    assert "Rewritten by a person: https://seller.example/demo" in received.message.get_content()
    assert not smtp.messages_to(untouched_send.toEmail)


def test_an_approved_edit_that_fails_the_gate_is_held_with_the_reasons(
    run_settings, smtp, sessions
):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    ((message, _, _),) = step_one(sessions)
    as_the_web_app(
        sessions,
        message.id,
        status="approved",
        body="Hi Sarah,\n\nSee https://elsewhere.example/offer or write to boss@elsewhere.example",
    )

    counts = generate(campaign_id)

    assert (counts.released, counts.sent_back) == (0, 1)
    ((message, send, lead),) = step_one(sessions)
    assert message.status == "pending_review"
    assert message.reviewReason.startswith("the approved text fails the quality gate: ")
    assert "links to elsewhere.example, which is not allowed" in message.reviewReason
    assert "adds 1 email address(es)" in message.reviewReason
    assert send.statusReason == f"awaiting review: {message.reviewReason}"
    assert (send.scheduledFor, send.claimToken) == (None, None)
    assert lead.lastError == message.reviewReason
    assert (lead.currentStepOrder, lead.nextScheduledDate) == (1, None)
    assert deliver(campaign_id).total("sent") == 0
    assert smtp.messages == []

    # Fixed and approved again, it goes out as fixed.
    as_the_web_app(sessions, message.id, status="approved", body="Hi Sarah,\n\nFixed.\n\nAlex")
    assert generate(campaign_id).released == 1
    assert deliver(campaign_id).total("sent") == 1
    assert "Fixed." in smtp.wait_for(1)[0].message.get_content()
    assert step_one(sessions)[0][2].lastError is None


def test_a_rejection_holds_the_lead_with_a_visible_reason(run_settings, smtp, sessions):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    ((message, _, _),) = step_one(sessions)
    as_the_web_app(sessions, message.id, status="rejected", reviewNote="Too pushy for a CFO")

    counts = generate(campaign_id)

    assert (counts.rejected, counts.released) == (1, 0)
    ((message, send, lead),) = step_one(sessions)
    assert message.status == "rejected"
    assert send.statusReason == "rejected in review: Too pushy for a CFO"
    assert (send.status, send.scheduledFor) == ("scheduled", None)
    assert lead.lastError == "rejected in review: Too pushy for a CFO"
    assert (lead.status, lead.currentStepOrder, lead.nextScheduledDate) == ("active", 1, None)
    assert generate(campaign_id).rejected == 0  # recorded once
    assert deliver(campaign_id).total("sent") == 0
    assert smtp.messages == []


def test_a_released_message_put_back_into_review_is_never_handed_over(run_settings, smtp, sessions):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    ((message, _, _),) = step_one(sessions)
    as_the_web_app(sessions, message.id, status="approved")
    assert generate(campaign_id).released == 1
    # The web app takes the approval back after the send got its slot.
    as_the_web_app(sessions, message.id, status="rejected")

    report = deliver(campaign_id)

    assert report.total("sent") == 0 and report.total("deferred") == 1
    ((_, send, _),) = step_one(sessions)
    assert send.status == "scheduled"
    assert send.statusReason == "message rejected (review before send)"
    assert smtp.messages == []


def review_first(request):
    """The default echo, except that the first answer for lead1 links where it may not."""
    draft = default_responder(request)
    if "Company 1" in user_text(request) and not review_first.flagged:
        review_first.flagged = True
        return {**draft, "body": draft["body"] + "\nhttps://elsewhere.example/x"}
    return draft


def test_review_first_reviews_a_steps_first_messages_then_only_flagged_ones(
    run_settings, smtp, sessions
):
    review_first.flagged = False
    rules = {**RULES, "review": "first", "reviewCount": 1}
    campaign_id = seed(sessions, 3, rules=rules)
    with FakeOpenAI(responder=review_first) as llm:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=llm.base_url)
        counts = generate(campaign_id)  # one batch: its leads count in claim order

    assert (counts.scheduled, counts.awaiting_review) == (3, 2)
    reasons = {send.toEmail: message.reviewReason for message, send, _ in step_one(sessions)}
    assert reasons["lead0@buyer.example"] == (
        "one of the first 1 messages of its step (review: first)"
    )
    assert reasons["lead1@buyer.example"].startswith(
        "the quality gate flagged the first draft (links to elsewhere.example"
    )
    assert reasons["lead2@buyer.example"] is None
    assert deliver(campaign_id).total("sent") == 1
    assert smtp.wait_for(1)[0].rcpt_tos == ("lead2@buyer.example",)
