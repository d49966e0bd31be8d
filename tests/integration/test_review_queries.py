"""Review before send's queries on real PostgreSQL: which approved sends a run may claim, how its
verdicts are fenced, rejections recorded once, the launch sample and the launch itself."""

from datetime import timedelta

from sqlalchemy import select, update

from core.generation.approval import judge_approved
from core.statuses import CampaignStatus
from db.base import utcnow
from db.models import Campaign, CampaignLead, EmailSend, GeneratedMessage
from db.queries.mailboxes import launch_campaign
from db.queries.review import claim_approved, record_rejections, sample_leads, write_verdicts
from tests import factories

LEASE = timedelta(minutes=10)
RULES = {"timezone": "UTC", "fromEmail": "alex@seller.example", "review": "all"}


def awaiting(sessions, n: int, *, message_status: str = "approved", **campaign) -> list[str]:
    """n sends awaiting review whose message has `message_status`, leads waiting at step 1."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES, **campaign)
        ids = []
        for i in range(n):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead)
            send = factories.scheduled_send(
                session, camp, lead, subject="Hi Sarah", body="Hello Sarah, about Acme Corp."
            )
            send.scheduledFor = None
            session.get(GeneratedMessage, send.generatedMessageId).status = message_status
            ids.append(send.id)
        session.execute(update(CampaignLead).values(nextScheduledDate=None))
        return ids


def claim(sessions, **fields):
    with sessions.begin() as session:
        return claim_approved(
            session,
            now=fields.pop("now", utcnow()),
            limit=10,
            worker="w",
            lease=LEASE,
            campaign_id=None,
        )


def test_only_approved_sends_of_active_campaigns_and_leads_are_claimed_once(sessions):
    approved = awaiting(sessions, 2)
    awaiting(sessions, 1, message_status="pending_review")
    awaiting(sessions, 1, status="paused")
    with sessions.begin() as session:
        session.execute(
            update(CampaignLead)
            .where(CampaignLead.leadId == session.get(EmailSend, approved[1]).leadId)
            .values(status="paused")
        )
    first = claim(sessions)
    assert [m.sendId for m in first.messages] == [approved[0]]
    (message,) = first.messages
    assert (message.lead.stepOrder, message.lead.nextStepDelayDays) == (1, 3)
    assert claim(sessions).messages == []  # leased
    assert len(claim(sessions, now=utcnow() + LEASE * 2).messages) == 1  # until the lease ends


def test_an_edit_saved_after_the_claim_is_not_released_unchecked(sessions):
    (send_id,) = awaiting(sessions, 1)
    batch = claim(sessions)
    verdict = judge_approved(batch.messages[0], as_of=utcnow(), model="template")
    with sessions.begin() as session:
        message_id = session.get(EmailSend, send_id).generatedMessageId
        session.execute(
            update(GeneratedMessage)
            .where(GeneratedMessage.id == message_id)
            .values(body="Edited after the run read it: https://evil.example")
        )
    with sessions.begin() as session:
        written = write_verdicts(
            session,
            token=batch.token,
            now=utcnow(),
            releases=[verdict],
            send_backs=[],
            claimed=[send_id],
        )
    assert (written.released, written.sent_back) == (set(), set())
    with sessions() as session:
        send = session.get(EmailSend, send_id)
        lead = session.scalars(select(CampaignLead)).one()
    assert (send.scheduledFor, send.claimToken) == (None, None)  # released for the next run
    assert (lead.currentStepOrder, lead.nextScheduledDate) == (1, None)


def test_a_zombie_release_whose_claim_was_taken_over_writes_nothing(sessions):
    (send_id,) = awaiting(sessions, 1)
    zombie = claim(sessions)
    claim(sessions, now=utcnow() + LEASE * 2)
    verdict = judge_approved(zombie.messages[0], as_of=utcnow(), model="template")
    with sessions.begin() as session:
        written = write_verdicts(
            session,
            token=zombie.token,
            now=utcnow(),
            releases=[verdict],
            send_backs=[],
            claimed=[send_id],
        )
    assert written.released == set()
    with sessions() as session:
        assert session.get(EmailSend, send_id).scheduledFor is None


def test_a_rejection_is_recorded_once_and_again_when_its_note_changes(sessions):
    (send_id,) = awaiting(sessions, 1, message_status="rejected")
    with sessions.begin() as session:
        first = record_rejections(session, now=utcnow(), campaign_id=None)
    with sessions.begin() as session:
        again = record_rejections(session, now=utcnow(), campaign_id=None)
        message_id = session.get(EmailSend, send_id).generatedMessageId
        session.execute(
            update(GeneratedMessage)
            .where(GeneratedMessage.id == message_id)
            .values(reviewNote="Wrong product")
        )
    with sessions.begin() as session:
        noted = record_rejections(session, now=utcnow(), campaign_id=None)
    assert (sum(first.values()), again, sum(noted.values())) == (1, {}, 1)
    with sessions() as session:
        send = session.get(EmailSend, send_id)
        lead = session.scalars(select(CampaignLead)).one()
    assert send.statusReason == lead.lastError == "rejected in review: Wrong product"
    assert (send.status, send.scheduledFor) == ("scheduled", None)


def test_the_sample_takes_active_enrolments_first_at_the_asked_step(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, status="draft")
        for i, status in enumerate(["replied", "active", "active"]):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            enrolled = utcnow() - timedelta(minutes=10 - i)  # oldest first
            factories.enrolment(session, camp, lead, status=status, createdAt=enrolled)
        campaign_id = camp.id
    with sessions() as session:
        leads = sample_leads(session, campaign_id=campaign_id, step_order=2, limit=2, now=utcnow())
    assert [lead.email for lead in leads] == ["lead1@buyer.example", "lead2@buyer.example"]
    assert {(lead.stepOrder, lead.nextStepDelayDays) for lead in leads} == {(2, 3)}
    assert all(lead.subjectTemplate == "Step 2 for {{firstName|there}}" for lead in leads)


def test_a_launch_makes_a_draft_or_paused_campaign_active_and_nothing_else(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        ids = {s: factories.campaign(session, ws, status=s).id for s in CampaignStatus}
    with sessions.begin() as session:
        before = {s: launch_campaign(session, i, now=utcnow()) for s, i in ids.items()}
        assert launch_campaign(session, "nope", now=utcnow()) is None
    assert before == {s: s for s in CampaignStatus}
    with sessions() as session:
        after = {s: session.get(Campaign, i).status for s, i in ids.items()}
    assert after == {
        "draft": "active",
        "active": "active",
        "paused": "active",
        "completed": "completed",
        "archived": "archived",
    }
