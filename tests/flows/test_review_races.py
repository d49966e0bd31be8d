"""Approval racing a step backfill (`regenerate_step`), in every order the two can meet: whatever
the order, the lead's step keeps exactly one current message, its send points at it, and the
one email that finally leaves is one a person approved."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from core.generation.regeneration import MessageRewrite
from core.statuses import GeneratedMessageStatus
from db.base import new_id, utcnow
from db.models import EmailSend, GeneratedMessage, SequenceStep
from db.queries.regeneration import replace_messages, step_page
from db.queries.review import claim_approved, decide
from tests.flows.test_review_before_send import deliver, generate, seed
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import default_responder

pytestmark = pytest.mark.flows

APPROVABLE = (GeneratedMessageStatus.pending_review, GeneratedMessageStatus.rejected)
LEASE = timedelta(minutes=10)


def approve(sessions, message_id: str) -> GeneratedMessageStatus | None:
    """What `review approve` does; the message's status before."""
    with sessions.begin() as session:
        before = decide(
            session,
            [message_id],
            status=GeneratedMessageStatus.approved,
            from_statuses=APPROVABLE,
            note=None,
            now=utcnow(),
        )
    return before.get(message_id)


def current(sessions) -> tuple[GeneratedMessage, EmailSend]:
    """The step-1 message that is not superseded, which must be exactly one, and its send,
    which must point at it."""
    with sessions() as session:
        (message,) = session.scalars(
            select(GeneratedMessage)
            .join(SequenceStep, SequenceStep.id == GeneratedMessage.stepId)
            .where(SequenceStep.stepOrder == 1, GeneratedMessage.status != "superseded")
        ).all()
        (send,) = session.scalars(
            select(EmailSend)
            .join(SequenceStep, SequenceStep.id == EmailSend.stepId)
            .where(SequenceStep.stepOrder == 1)
        ).all()
    assert send.generatedMessageId == message.id
    return message, send


def new_instructions(sessions, campaign_id: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(SequenceStep)
            .where(SequenceStep.campaignId == campaign_id, SequenceStep.stepOrder == 1)
            .values(aiInstructions="Mention the webinar.")
        )


def backfill(campaign_id: str):
    return generate(campaign_id, regenerate_step=1)


def finish_and_deliver(sessions, smtp, campaign_id: str) -> str:
    """Approve whatever still waits, release it, deliver: the one email's body."""
    message, _ = current(sessions)
    if message.status == "pending_review":
        assert approve(sessions, message.id) == "pending_review"
        assert generate(campaign_id).released == 1
    assert deliver(campaign_id).total("sent") == 1
    (received,) = smtp.wait_for(1)
    assert smtp.messages == [received]
    delivered, send = current(sessions)
    assert (delivered.status, send.status) == ("approved", "sent")
    assert received.message.get_content().strip() == delivered.body
    return delivered.body


def test_approval_blocked_by_a_backfill_write_finds_its_message_superseded(
    run_settings, smtp, sessions
):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    old, send = current(sessions)
    with sessions.begin() as session:
        page = step_page(
            session,
            campaign_id=campaign_id,
            step_id=send.stepId,
            after="",
            limit=10,
            now=utcnow(),
            worker="flow-run/backfill",
            lease=LEASE,
        )
    assert [s.sendId for s in page.sends] == [send.id]
    rewrite = MessageRewrite(
        sendId=send.id,
        messageId=new_id(),
        subject="Regenerated subject",
        body="Regenerated body.",
        model="template",
        promptVersion="v1",
        inputHash="new",
        promptTokens=0,
        completionTokens=0,
        latencyMs=0,
        costUsd=Decimal(0),
        fallbackReason=None,
        status=GeneratedMessageStatus.pending_review,
        reviewReason="regenerated while awaiting review",
    )
    writer = sessions()
    writer.begin()
    assert replace_messages(writer, token=page.token, now=utcnow(), rewrites=[rewrite])
    answer: dict[str, object] = {}
    racer = threading.Thread(target=lambda: answer.update(before=approve(sessions, old.id)))
    racer.start()
    racer.join(0.5)
    assert racer.is_alive()  # the approval waits on the backfill's lock on the old message
    writer.commit()
    writer.close()
    racer.join(10)

    assert answer["before"] == "superseded"  # so it approved nothing
    message, send = current(sessions)
    assert (message.id, message.status) == (rewrite.messageId, "pending_review")
    assert send.statusReason == "awaiting review: regenerated while awaiting review"
    assert generate(campaign_id).released == 0 and deliver(campaign_id).total("sent") == 0
    assert finish_and_deliver(sessions, smtp, campaign_id) == "Regenerated body."


def test_an_approval_the_backfill_overtakes_is_reviewed_again(run_settings, smtp, sessions):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    old, _ = current(sessions)
    assert approve(sessions, old.id) == "pending_review"
    new_instructions(sessions, campaign_id)

    counts = backfill(campaign_id)  # before any generation run released the approval

    assert counts.regenerated == 1
    message, send = current(sessions)
    assert message.id != old.id and message.status == "pending_review"
    assert send.scheduledFor is None  # still awaiting review: the approval was of old text
    assert generate(campaign_id).released == 0 and deliver(campaign_id).total("sent") == 0
    finish_and_deliver(sessions, smtp, campaign_id)


def test_a_release_racing_a_backfill_claim_leaves_the_send_to_the_backfill(
    run_settings, smtp, sessions
):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    old, _ = current(sessions)
    new_instructions(sessions, campaign_id)
    seen: dict[str, object] = {}

    def approve_while_backfilling(request):
        # The backfill holds the send (its lease) while the LLM writes: a person approves the
        # old message now, and a generation run's release finds nothing it may take.
        if not seen:
            seen["before"] = approve(sessions, old.id)
            with sessions.begin() as session:
                seen["claimable"] = claim_approved(
                    session,
                    now=utcnow(),
                    limit=10,
                    worker="flow-run/generation",
                    lease=LEASE,
                    campaign_id=campaign_id,
                ).messages
        return default_responder(request)

    with FakeOpenAI(responder=approve_while_backfilling) as llm:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=llm.base_url)
        counts = backfill(campaign_id)

    assert seen == {"before": "pending_review", "claimable": []}
    assert counts.regenerated == 1
    message, _ = current(sessions)
    assert message.id != old.id and message.status == "pending_review"
    body = finish_and_deliver(sessions, smtp, campaign_id)
    assert body == message.body


def test_a_backfill_after_the_release_keeps_the_approved_message(run_settings, smtp, sessions):
    campaign_id = seed(sessions, 1)
    generate(campaign_id)
    old, _ = current(sessions)
    approve(sessions, old.id)
    assert generate(campaign_id).released == 1
    new_instructions(sessions, campaign_id)

    counts = backfill(campaign_id)

    assert (counts.kept_for_review, counts.regenerated) == (1, 0)
    message, send = current(sessions)
    assert (message.id, message.status) == (old.id, "approved")
    assert send.scheduledFor is not None and send.claimToken is None
    assert finish_and_deliver(sessions, smtp, campaign_id) == old.body
