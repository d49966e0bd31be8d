"""Follow-up threads loaded with the claim: what went out at earlier steps, and what came back."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, text

from core.generation.thread import CameBack, SentEmail, ThreadEvent
from db.queries.claims import claim_due_leads, preview_due_leads
from db.queries.preview import preview_lead
from tests import factories

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SENT = NOW - timedelta(days=6)
PRICING = "https://seller.example/pricing"


def seed(sessions) -> dict[str, str]:
    """Ada is due at step 3 after two sent emails; Ben at step 2, but his step 1 failed;
    Cy, due first, at step 1. Ada also got an email from another campaign."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=3)
        other = factories.campaign(session, ws, steps=1)
        due = NOW - timedelta(minutes=1)
        ada, ben, cy = (factories.lead(session, ws, email=f"{n}@buyer.example") for n in "abc")
        factories.enrolment(session, camp, ada, due=due, currentStepOrder=3)
        factories.enrolment(session, camp, ben, due=due, currentStepOrder=2)
        factories.enrolment(session, camp, cy, due=due - timedelta(minutes=1))
        first = factories.scheduled_send(
            session,
            camp,
            ada,
            step=1,
            subject="Idea for Acme",
            body="We cut costs.",
            status="sent",
            sentAt=SENT,
        )
        factories.scheduled_send(
            session,
            camp,
            ada,
            step=2,
            subject="Re: Idea for Acme",
            body="Any thoughts?",
            status="sent",
            sentAt=SENT + timedelta(days=3),
        )
        factories.event(session, first, "auto_reply", SENT + timedelta(seconds=30))
        factories.event(session, first, "click", SENT + timedelta(days=1), url=PRICING)
        # A link scanner's click, days later (so the thread's own timing cannot tell): left out.
        scanned = factories.event(session, first, "click", SENT + timedelta(days=2), url=PRICING)
        scanned.isMachine, scanned.machineReason = True, "scanner-user-agent"
        # Opens come from image proxies, and a reply would have stopped the lead.
        factories.event(session, first, "open", SENT + timedelta(hours=1))
        factories.scheduled_send(session, other, ada, step=1, status="sent", sentAt=SENT)
        factories.scheduled_send(session, camp, ben, step=1, status="failed")
        return {"ada": ada.id, "ben": ben.id, "cy": cy.id}


def statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_a_claim_loads_each_follow_up_s_sent_emails_and_what_came_back(sessions, engine):
    ids = seed(sessions)
    seen = statements(engine)
    with sessions.begin() as session:
        _, leads = claim_due_leads(
            session, as_of=NOW, now=NOW, limit=10, worker="w", lease=timedelta(minutes=5)
        )
    threads = {lead.leadId: lead.thread for lead in leads}
    assert threads[ids["ada"]] == (
        SentEmail(
            stepOrder=1,
            sentAt=SENT,
            subject="Idea for Acme",
            body="We cut costs.",
            events=(
                ThreadEvent(kind=CameBack.auto_reply, occurredAt=SENT + timedelta(seconds=30)),
                ThreadEvent(kind=CameBack.click, occurredAt=SENT + timedelta(days=1), url=PRICING),
            ),
        ),
        SentEmail(
            stepOrder=2,
            sentAt=SENT + timedelta(days=3),
            subject="Re: Idea for Acme",
            body="Any thoughts?",
        ),
    )
    assert threads[ids["ben"]] == () and threads[ids["cy"]] == ()
    # The claim (between its planner settings and their reset), one statement for every thread
    # of the batch, and one for its steps' A/B variants.
    planner = [statement for statement in seen if "set_config(" in statement]
    claimed = [statement for statement in seen if "set_config(" not in statement]
    assert len(planner) == 2 and len(claimed) == 3 and "SequenceStepVariant" in claimed[2]


def test_a_batch_without_follow_ups_costs_no_thread_statement(sessions, engine):
    seed(sessions)
    seen = statements(engine)
    with sessions() as session:
        preview = preview_due_leads(session, as_of=NOW, now=NOW, limit=1)
    # The preview and its steps' A/B variants: no thread statement.
    assert [lead.stepOrder for lead in preview] == [1] and len(seen) == 2
    assert "SequenceStepVariant" in seen[1]


def test_a_preview_of_a_follow_up_carries_the_thread_a_run_would_load(sessions):
    ids = seed(sessions)
    with sessions() as session:
        campaign_id = session.execute(
            text('SELECT "campaignId" FROM "CampaignLead" WHERE "leadId" = :id'), {"id": ids["ada"]}
        ).scalar_one()
        _, claimed = claim_due_leads(
            session, as_of=NOW, now=NOW, limit=10, worker="w", lease=timedelta(minutes=5)
        )
        session.rollback()
        previewed = preview_lead(
            session, campaign_id=campaign_id, step_order=3, now=NOW, lead_id=ids["ada"]
        )
    (run,) = [lead for lead in claimed if lead.leadId == ids["ada"]]
    assert previewed.thread == run.thread and len(previewed.thread) == 2
