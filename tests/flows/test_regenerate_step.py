"""The step backfill of `process-campaign-sends` (`regenerate_step`), on real PostgreSQL.

A campaign of two steps whose step-1 sends went out and whose step-2 sends are scheduled; the
analyst changes step 2's instructions and regenerates its not-yet-sent messages.
"""

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from core.statuses import CampaignLeadStatus
from db.base import utcnow
from db.models import EmailSend, GeneratedMessage, Lead, SequenceStep
from db.queries.stops import stop_address
from flows.process_campaign_sends import process_campaign_sends
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import default_responder
from tests.support.run_records import run_with_artifacts

pytestmark = pytest.mark.flows

RULES = {"timezone": "UTC", "fromName": "Alex", "fromEmail": "alex@seller.example"}
SENT_AT = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
SLOT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
OLD = "Instructions for step 2"
NEW = "Mention the webinar on 3 December and keep it under 80 words."
_INSTRUCTIONS = re.compile(r"Instructions for this email:\n(.*?)\n\n", re.DOTALL)


def instructed_model(request):
    """The default echo, plus a line carrying the step's instructions (from the system prompt)."""
    draft = default_responder(request)
    system = request["messages"][0]["content"]
    instructions = _INSTRUCTIONS.search(system).group(1)
    return {**draft, "body": f"{draft['body']}\n\nP.S. ({instructions})"}


@pytest.fixture
def llm(run_settings):
    with FakeOpenAI(responder=instructed_model) as server:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=server.base_url)
        yield server


def seed(
    sessions, *, scheduled: int = 3, sent: int = 1, delivery_claimed: int = 1, rules=None
) -> str:
    """Every lead got step 1; step 2 is sent, scheduled, or scheduled and claimed by delivery."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(
            session, ws, steps=2, sendingRules=rules or RULES, goal="Book calls"
        )
        kinds = ["scheduled"] * scheduled + ["sent"] * sent + ["claimed"] * delivery_claimed
        for i, kind in enumerate(kinds):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(
                session, camp, lead, status="completed", currentStepOrder=3, due=SENT_AT
            )
            factories.scheduled_send(
                session,
                camp,
                lead,
                step=1,
                scheduled_for=SENT_AT,
                subject="First touch",
                status="sent",
                sentAt=SENT_AT,
                providerMessageId=f"<step1-{i}@seller.example>",
                mailbox="alex@seller.example",
            )
            step2: dict = {}
            if kind == "sent":
                step2 = {
                    "status": "sent",
                    "sentAt": SENT_AT + timedelta(days=3),
                    "providerMessageId": f"<step2-{i}@seller.example>",
                }
            elif kind == "claimed":
                step2 = {
                    "claimedBy": "flow-run/delivery",
                    "claimedUntil": utcnow() + timedelta(minutes=10),
                    "claimToken": "delivery-token",
                }
            factories.scheduled_send(
                session,
                camp,
                lead,
                step=2,
                scheduled_for=SLOT + timedelta(minutes=i),
                subject="Old follow-up",
                body="Old body written from the old instructions.",
                **step2,
            )
        return camp.id


def set_instructions(sessions, campaign_id: str, instructions: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(SequenceStep)
            .where(SequenceStep.campaignId == campaign_id, SequenceStep.stepOrder == 2)
            .values(aiInstructions=instructions)
        )


def snapshot(sessions, where: str = "true") -> dict[str, tuple]:
    """Every column of the matching sends and of their messages, as PostgreSQL stores them."""
    with sessions() as session:
        rows = session.execute(
            text(
                f"""
                SELECT s.id, to_jsonb(s)::text, to_jsonb(m)::text
                FROM "EmailSend" s LEFT JOIN "GeneratedMessage" m ON m.id = s."generatedMessageId"
                WHERE {where}
                """
            )
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


def step2_sends(sessions) -> list[EmailSend]:
    with sessions() as session:
        return list(
            session.scalars(
                select(EmailSend)
                .join(SequenceStep, SequenceStep.id == EmailSend.stepId)
                .where(SequenceStep.stepOrder == 2)
                .order_by(EmailSend.scheduledFor)
            )
        )


def messages(sessions) -> dict[str, GeneratedMessage]:
    with sessions() as session:
        return {m.id: m for m in session.scalars(select(GeneratedMessage))}


def run(**params):
    return asyncio.run(process_campaign_sends(**params))


def test_scheduled_sends_get_new_messages_in_the_same_slot_and_sent_ones_are_untouched(
    llm, sessions
):
    campaign_id = seed(sessions, scheduled=3, sent=1, delivery_claimed=1)
    set_instructions(sessions, campaign_id, NEW)
    before = {s.id: s for s in step2_sends(sessions)}
    untouched = snapshot(sessions, "s.status <> 'scheduled' OR s.\"claimToken\" IS NOT NULL")
    assert len(untouched) == 5 + 1 + 1  # every step-1 send, the sent and the claimed step 2

    counts = run(campaign_id=campaign_id, regenerate_step=2, batch_size=2)[campaign_id]

    assert (counts.claimed, counts.regenerated, counts.unchanged, counts.held) == (3, 3, 0, 0)
    assert (counts.not_scheduled, counts.busy, counts.changed) == (1, 1, 0)
    assert counts.skipped == 2
    assert llm.stats().requests == 3
    # Sent sends (both steps), their messages, and the send a delivery run holds: byte-identical.
    assert snapshot(sessions, f"s.id IN ({', '.join(repr(i) for i in untouched)})") == untouched

    after = messages(sessions)
    regenerated = [s for s in step2_sends(sessions) if s.status == "scheduled" and not s.claimToken]
    assert len(regenerated) == 3
    for send in regenerated:
        old = before[send.id]
        assert send.generatedMessageId != old.generatedMessageId
        assert send.scheduledFor == old.scheduledFor  # the same slot
        assert (send.claimedBy, send.claimedUntil, send.claimToken) == (None, None, None)
        assert after[old.generatedMessageId].status == "superseded"
        new = after[send.generatedMessageId]
        assert new.status == "generated" and new.stepId == old.stepId
        assert NEW in new.body and "Old body" not in new.body
        assert new.model == "gpt-4o-mini" and new.inputHash and new.fallbackReason is None
    with sessions() as session:
        current = session.scalar(
            select(func.count())
            .select_from(GeneratedMessage)
            .where(GeneratedMessage.status != "superseded")
        )
    assert current == 5 + 5  # one current message per lead and step, as the index demands


def test_changed_instructions_miss_the_cache_and_a_rerun_changes_nothing(llm, sessions):
    campaign_id = seed(sessions, scheduled=4, sent=0, delivery_claimed=0)
    first = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]
    assert (first.regenerated, llm.stats().requests) == (4, 4)
    written = [m for m in messages(sessions).values() if m.inputHash]  # the backfill's own
    assert len(written) == 4 and all(OLD in m.body for m in written)

    rows_before = len(messages(sessions))
    again = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]
    assert (again.claimed, again.unchanged, again.regenerated) == (4, 4, 0)
    assert llm.stats().requests == 4  # nothing asked
    assert len(messages(sessions)) == rows_before  # nothing written

    set_instructions(sessions, campaign_id, NEW)
    changed = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]
    assert (changed.regenerated, changed.cache_hits) == (4, 0)
    assert llm.stats().requests == 8  # the instructions are part of the cache key
    current = [m for m in messages(sessions).values() if m.status == "generated" and m.inputHash]
    assert len(current) == 4 and all(NEW in m.body for m in current)


def test_a_backfill_writes_the_step_knowing_what_step_1_said(llm, sessions):
    campaign_id = seed(sessions, scheduled=1, sent=0, delivery_claimed=0)
    assert run(campaign_id=campaign_id, regenerate_step=2)[campaign_id].regenerated == 1
    [request] = llm.request_log()
    [thread] = re.findall(r"<thread>(.*?)</thread>", request.body["messages"][1]["content"])
    assert json.loads(thread) == [
        {
            "step": 1,
            "sentOn": "2026-11-20",
            "subject": "First touch",
            "body": "Hi there,\n\nWorth a chat?\n\nAlex",
        }
    ]


def test_dry_run_writes_nothing_holds_nothing_and_primes_the_cache(llm, sessions):
    campaign_id = seed(sessions, scheduled=3, sent=1, delivery_claimed=1)
    set_instructions(sessions, campaign_id, NEW)
    everything = snapshot(sessions)

    counts, found, _ = asyncio.run(
        run_with_artifacts(
            process_campaign_sends, campaign_id=campaign_id, regenerate_step=2, dry_run=True
        )
    )
    preview = counts[campaign_id]

    assert (preview.claimed, preview.regenerated, preview.busy) == (3, 3, 1)
    assert snapshot(sessions) == everything  # not a row, not a claim
    assert "process-campaign-sends-regenerate-preview" in found
    assert "process-campaign-sends-regenerate-summary" in found
    assert NEW in str(found["process-campaign-sends-regenerate-preview"].data)

    counts = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]
    assert (counts.regenerated, counts.cache_hits) == (3, 3)
    assert llm.stats().requests == 3  # the real run paid for nothing the dry run had


def test_a_send_stopped_while_being_regenerated_is_left_alone(llm, sessions):
    campaign_id = seed(sessions, scheduled=3, sent=0, delivery_claimed=0)
    set_instructions(sessions, campaign_id, NEW)
    with sessions() as session:
        ws, email = session.execute(
            select(Lead.workspaceId, Lead.email).where(Lead.email == "lead1@buyer.example")
        ).one()
    target = next(s for s in step2_sends(sessions) if s.toEmail == email)

    def unsubscribes_meanwhile(request):
        # The lead unsubscribes while the batch's new messages are being written by the LLM.
        if not unsubscribes_meanwhile.done:
            with sessions.begin() as session:
                stop_address(
                    session,
                    workspace_id=ws,
                    email=email,
                    status=CampaignLeadStatus.unsubscribed,
                    reason="unsubscribed",
                    now=utcnow(),
                )
            unsubscribes_meanwhile.done = True
        return instructed_model(request)

    unsubscribes_meanwhile.done = False
    llm.set_responder(unsubscribes_meanwhile)

    counts = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]

    assert (counts.claimed, counts.regenerated, counts.changed) == (3, 2, 1)
    cancelled = next(s for s in step2_sends(sessions) if s.id == target.id)
    assert cancelled.status == "cancelled"
    assert cancelled.generatedMessageId == target.generatedMessageId  # not repointed
    assert messages(sessions)[target.generatedMessageId].status == "generated"  # not superseded


def test_a_send_whose_lease_was_taken_over_meanwhile_is_left_to_its_new_holder(llm, sessions):
    campaign_id = seed(sessions, scheduled=2, sent=0, delivery_claimed=0)
    set_instructions(sessions, campaign_id, NEW)
    target = step2_sends(sessions)[0]

    def taken_over_meanwhile(request):
        # As if this run's lease ran out and a delivery run claimed the send before the write.
        if not taken_over_meanwhile.done:
            with sessions.begin() as session:
                session.execute(
                    update(EmailSend)
                    .where(EmailSend.id == target.id)
                    .values(claimedBy="flow-run/delivery", claimToken="delivery-token")
                )
            taken_over_meanwhile.done = True
        return instructed_model(request)

    taken_over_meanwhile.done = False
    llm.set_responder(taken_over_meanwhile)
    counts = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]

    assert (counts.claimed, counts.regenerated, counts.changed) == (2, 1, 1)
    held = next(s for s in step2_sends(sessions) if s.id == target.id)
    assert (held.status, held.claimToken) == ("scheduled", "delivery-token")  # still theirs
    assert held.generatedMessageId == target.generatedMessageId
    assert messages(sessions)[target.generatedMessageId].status == "generated"


def test_two_overlapping_backfills_regenerate_each_send_exactly_once(llm, sessions):
    campaign_id = seed(sessions, scheduled=200, sent=0, delivery_claimed=0)
    set_instructions(sessions, campaign_id, NEW)
    llm.set_latency(500)  # each batch takes a while, so the two runs overlap
    # Each thread runs in a copy of this context, so it keeps the test's result storage.
    contexts = [copy_context() for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda ctx: ctx.run(run, campaign_id=campaign_id, regenerate_step=2, batch_size=10),
                contexts,
            )
        )
    assert sum(r[campaign_id].regenerated for r in results) == 200
    assert sum(r[campaign_id].held + r[campaign_id].changed for r in results) == 0
    assert llm.stats().requests == 200  # no send generated twice
    with sessions() as session:
        per_send = session.execute(
            select(GeneratedMessage.leadId, GeneratedMessage.status, func.count())
            .join(SequenceStep, SequenceStep.id == GeneratedMessage.stepId)
            .where(SequenceStep.stepOrder == 2)
            .group_by(GeneratedMessage.leadId, GeneratedMessage.status)
        ).all()
    assert {(status, count) for _, status, count in per_send} == {
        ("superseded", 1),
        ("generated", 1),
    }
    assert len(per_send) == 400
    assert all(s.claimToken is None and s.status == "scheduled" for s in step2_sends(sessions))


def test_a_send_that_cannot_be_regenerated_keeps_its_message_and_is_released(
    llm, sessions, run_settings
):
    run_settings.update(llm_max_retries="0")
    campaign_id = seed(
        sessions,
        scheduled=2,
        sent=0,
        delivery_claimed=0,
        rules={**RULES, "onGenerationFailure": "hold"},
    )
    set_instructions(sessions, campaign_id, NEW)
    before = snapshot(sessions)
    llm.configure(fault_rates={"500": 1.0})

    counts = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]

    assert (counts.claimed, counts.held, counts.regenerated) == (2, 2, 0)
    assert snapshot(sessions) == before  # old messages kept, claims released


def test_regenerate_step_without_campaign_id_is_refused_before_anything(llm, sessions):
    seed(sessions)
    before = snapshot(sessions)
    with pytest.raises(ValueError, match="regenerate_step needs campaign_id"):
        run(regenerate_step=2)
    assert snapshot(sessions) == before
    assert llm.stats().requests == 0


def test_an_unknown_campaign_or_step_is_a_clear_error(llm, sessions):
    campaign_id = seed(sessions)
    with pytest.raises(ValueError, match=r"has no step with stepOrder 5 \(its steps: 1, 2\)"):
        run(campaign_id=campaign_id, regenerate_step=5)
    with pytest.raises(ValueError, match="no campaign with id 'nope'"):
        run(campaign_id="nope", regenerate_step=2)
    assert llm.stats().requests == 0


def test_offline_backfill_writes_the_rendered_template(run_settings, sessions):
    campaign_id = seed(sessions, scheduled=2, sent=1, delivery_claimed=0)
    set_instructions(sessions, campaign_id, NEW)
    counts = run(campaign_id=campaign_id, regenerate_step=2)[campaign_id]
    assert (counts.regenerated, counts.not_scheduled) == (2, 1)
    current = [
        m
        for m in messages(sessions).values()
        if m.status == "generated" and m.subject.startswith("Step 2")
    ]
    assert len(current) == 2 and {m.model for m in current} == {"template"}
