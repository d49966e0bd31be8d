"""Drafts written ahead that no run will use are retired by every run of
pregenerate-upcoming-steps, each with why, and a usable draft is never touched; against the fake
OpenAI server over HTTP, real PostgreSQL and both flows under Prefect's harness.

The races with the generation claim: a lead a generation run has claimed (its claim committed,
or still in its transaction) keeps its draft, which the run then adopts without an LLM call; a
lead whose draft is being retired is passed over by the claim and generated once, right after.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

import tasks.generation
from core.generation.pregenerate import RETIRED, SUPERSEDED_WHEN_DUE, outlived_reason, retire_before
from db.base import utcnow
from db.models import Campaign, CampaignLead, EmailSend, GeneratedMessage, Lead
from db.queries.claims import claim_due_leads
from db.queries.pregeneration import retire_drafts
from flows.pregenerate_upcoming_steps import pregenerate_upcoming_steps
from flows.process_campaign_sends import process_campaign_sends
from tests import factories
from tests.flows.test_generation_faults import ALWAYS_OPEN
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.flows

AS_OF = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
DUE = AS_OF + timedelta(days=3)
MAX_DAYS = 7  # PREGENERATE_MAX_DAYS, the default


def seed(sessions, n: int, *, status: str = "active") -> list[str]:
    """A campaign (of `status`) with n leads whose step 1 is due at DUE; their Lead ids."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=ALWAYS_OPEN)
        leads = []
        for i in range(n):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, due=DUE)
            leads.append(lead.id)
    return leads


def write_ahead() -> None:
    """Submit every upcoming lead, then read the batch the fake completed at once."""
    asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF))
    asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF, submit=False))


def poll():
    """The hourly poll: reads finished batches and retires the drafts no run will use."""
    return asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF, submit=False))


def send_due():
    return asyncio.run(process_campaign_sends(as_of=DUE + timedelta(minutes=1)))


def drafts(sessions) -> dict[str, tuple[str, str | None]]:
    """Each lead's step-1 message written ahead: (status, statusReason)."""
    with sessions() as session:
        rows = session.execute(
            select(GeneratedMessage.leadId, GeneratedMessage.status, GeneratedMessage.statusReason)
            .where(GeneratedMessage.pricing == "batch")
            .order_by(GeneratedMessage.createdAt)
        ).all()
    return {lead: (status, reason) for lead, status, reason in rows}


def outlive(sessions, leads: list[str]) -> None:
    """The leads' drafts were stored longer ago than PREGENERATE_MAX_DAYS + 1 day."""
    with sessions.begin() as session:
        session.execute(
            update(GeneratedMessage)
            .where(GeneratedMessage.leadId.in_(leads))
            .values(createdAt=utcnow() - timedelta(days=MAX_DAYS + 2))
        )


def enrolment(leads: list[str]):
    return update(CampaignLead).where(CampaignLead.leadId.in_(leads))


def retire_now(sessions) -> int:
    """The retiring statements of a run, committed at once."""
    with sessions.begin() as session:
        return retire(session)


def retire(session) -> int:
    now = utcnow()
    return retire_drafts(
        session,
        now=now,
        before=retire_before(now, max_days=MAX_DAYS),
        outlived=outlived_reason(MAX_DAYS),
    )


def test_drafts_no_run_will_use_are_retired_with_why_and_usable_ones_are_kept(llm, sessions):
    (replied, unsubscribed, bounced, completed, failed, moved_on, unenrolled, outlived,
     paused, paused_outlived, usable) = seed(sessions, 11)  # fmt: skip
    (archived,) = seed(sessions, 1)
    (campaign_paused,) = seed(sessions, 1)
    write_ahead()
    assert {status for status, _ in drafts(sessions).values()} == {"pregenerated"}
    assert len(drafts(sessions)) == 13

    with sessions.begin() as session:
        for lead, status in [
            (replied, "replied"),
            (unsubscribed, "unsubscribed"),
            (bounced, "bounced"),
            (completed, "completed"),
            (failed, "failed"),
            (paused, "paused"),
            (paused_outlived, "paused"),
        ]:
            session.execute(enrolment([lead]).values(status=status))
        # Its step was written meanwhile (the web app, a backfill): the lead is at step 2 now.
        session.execute(enrolment([moved_on]).values(currentStepOrder=2))
        session.execute(delete(CampaignLead).where(CampaignLead.leadId == unenrolled))
        for lead, status in [(archived, "archived"), (campaign_paused, "paused")]:
            camp = select(CampaignLead.campaignId).where(CampaignLead.leadId == lead)
            session.execute(update(Campaign).where(Campaign.id.in_(camp)).values(status=status))
    outlive(sessions, [outlived, paused_outlived])

    counts = poll()
    assert counts.retired == 10
    found = drafts(sessions)
    over = outlived_reason(MAX_DAYS)
    assert found == {
        replied: ("superseded", f"{RETIRED}: enrolment replied"),
        unsubscribed: ("superseded", f"{RETIRED}: enrolment unsubscribed"),
        bounced: ("superseded", f"{RETIRED}: enrolment bounced"),
        completed: ("superseded", f"{RETIRED}: enrolment completed"),
        failed: ("superseded", f"{RETIRED}: enrolment failed"),
        moved_on: ("superseded", f"{RETIRED}: the lead is at step 2, the draft is for step 1"),
        unenrolled: ("superseded", f"{RETIRED}: the lead is no longer enrolled"),
        outlived: ("superseded", over),
        paused_outlived: ("superseded", over),
        archived: ("superseded", f"{RETIRED}: campaign archived"),
        # A pause is lifted where it left off: its drafts wait, until they outlive their window.
        paused: ("pregenerated", None),
        campaign_paused: ("pregenerated", None),
        usable: ("pregenerated", None),
    }
    assert "PREGENERATE_MAX_DAYS" in over
    assert poll().retired == 0  # each is retired once

    # The usable draft is used when its lead comes due, with no LLM call and one send; of the
    # other active leads due, the one moved on and the one whose draft outlived its window are
    # generated now.
    before = llm.stats().requests
    send_due()
    assert llm.stats().requests - before == 2
    with sessions() as session:
        sent = session.execute(
            select(GeneratedMessage.status, GeneratedMessage.pricing)
            .join(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(EmailSend.leadId == usable)
        ).all()
        retired_sends = session.scalars(
            select(EmailSend.id)
            .join(GeneratedMessage, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(GeneratedMessage.status == "superseded")
        ).all()
    assert sent == [("generated", "batch")]
    assert retired_sends == []  # a retired draft is never sent


def test_a_draft_superseded_at_due_time_says_why_too(llm, sessions):
    (lead,) = seed(sessions, 1)
    write_ahead()
    with sessions.begin() as session:
        session.execute(update(Lead).where(Lead.id == lead).values(companyName="Globex"))
    send_due()
    assert drafts(sessions) == {lead: ("superseded", SUPERSEDED_WHEN_DUE)}
    with sessions() as session:
        current = session.scalars(
            select(GeneratedMessage.statusReason).where(GeneratedMessage.status == "generated")
        ).all()
    assert current == [None]


def test_a_lead_claimed_by_a_generation_run_keeps_its_draft_for_the_run_to_adopt(
    llm, sessions, monkeypatch
):
    leads = seed(sessions, 2)
    write_ahead()
    outlive(sessions, leads)  # retirable, were their leads not claimed
    retired_meanwhile: list[int] = []

    def retire_after_the_claim(name: str) -> None:
        # A run of pregenerate-upcoming-steps between the generation run's claim and its write.
        if name == "generation.after_claim":
            retired_meanwhile.append(retire_now(sessions))

    monkeypatch.setattr(tasks.generation, "failpoint", retire_after_the_claim)
    before = llm.stats().requests
    counts = send_due()

    assert retired_meanwhile and set(retired_meanwhile) == {0}
    assert llm.stats().requests == before  # both drafts adopted: no lead generated twice
    assert sum(c.scheduled for c in counts.values()) == 2
    with sessions() as session:
        rows = session.execute(
            select(GeneratedMessage.id, GeneratedMessage.status, EmailSend.generatedMessageId)
            .outerjoin(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(GeneratedMessage.leadId.in_(leads))
        ).all()
    # One message per lead, the draft itself, with its send: no copy, nothing superseded.
    assert len(rows) == 2
    assert all(status == "generated" and sent == message for message, status, sent in rows)


def test_a_claim_still_in_its_transaction_is_passed_over_not_waited_for(llm, sessions):
    (lead,) = seed(sessions, 1)
    write_ahead()
    outlive(sessions, [lead])
    with sessions() as claiming:
        _, claimed = claim_due_leads(
            claiming,
            as_of=DUE + timedelta(minutes=1),
            now=utcnow(),
            limit=10,
            worker="another-run",
            lease=timedelta(minutes=10),
        )
        assert [c.leadId for c in claimed] == [lead] and claimed[0].pregenerated is not None
        assert poll().retired == 0  # the enrolment is locked: skipped, and the run goes on
        claiming.rollback()  # that claim never happened
    assert poll().retired == 1
    assert drafts(sessions) == {lead: ("superseded", outlived_reason(MAX_DAYS))}


def test_a_lead_due_while_its_draft_is_retired_is_generated_once_right_after(llm, sessions):
    (lead,) = seed(sessions, 1)
    write_ahead()
    outlive(sessions, [lead])
    before = llm.stats().requests
    with sessions.begin() as retiring, ThreadPoolExecutor(1) as other:
        assert retire(retiring) == 1
        # The claim passes over the lead the retiring transaction holds, rather than reading a
        # draft that is about to go (and then waiting on it to write the lead).
        running = other.submit(copy_context().run, send_due)
        try:
            during = running.result(timeout=60)
        except TimeoutError:
            retiring.rollback()  # let the run finish, then say what went wrong
            running.result()
            pytest.fail("the generation run waited for the retiring transaction")
        assert sum(c.claimed for c in during.values()) == 0
    after = send_due()
    assert sum(c.scheduled for c in after.values()) == 1
    assert llm.stats().requests - before == 1  # generated once, synchronously
    with sessions() as session:
        rows = session.execute(
            select(GeneratedMessage.status, GeneratedMessage.pricing, EmailSend.id)
            .outerjoin(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(GeneratedMessage.leadId == lead)
            .order_by(GeneratedMessage.createdAt)
        ).all()
    assert [(status, pricing, send is not None) for status, pricing, send in rows] == [
        ("superseded", "batch", False),
        ("generated", "standard", True),
    ]


def test_without_a_key_a_run_only_retires(sessions, run_settings):
    with FakeOpenAI() as server:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=server.base_url)
        (lead,) = seed(sessions, 1)
        write_ahead()
    run_settings.update(openai_api_key=None)  # the key was removed since
    with sessions.begin() as session:
        session.execute(enrolment([lead]).values(status="replied"))
    counts = poll()
    assert counts.retired == 1 and counts.finished == counts.submitted_requests == 0
    assert drafts(sessions) == {lead: ("superseded", f"{RETIRED}: enrolment replied")}
