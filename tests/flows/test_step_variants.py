"""A/B variants through `process-campaign-sends`: each lead is written in its variant, its message
and send record it, and neither a rerun nor a step backfill moves it to another variant."""

import asyncio

import pytest
from sqlalchemy import select, text, update

from core.campaigns.campaign_file import parse_campaign
from core.campaigns.variants import StepVariant, assign_variant
from db.models import EmailSend, GeneratedMessage, SequenceStep, SequenceStepVariant, Workspace
from db.queries.campaigns import create_campaign
from flows.process_campaign_sends import process_campaign_sends
from tests import factories
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.flows

FASTER = "A faster way for {{companyName}}?"
CAMPAIGN = {
    "workspace": {"id": "w-ab", "name": "W"},
    "id": "camp-ab",
    "name": "AB",
    "status": "active",
    "sendingRules": {"timezone": "UTC", "fromName": "Alex", "fromEmail": "alex@seller.example"},
    "steps": [
        {
            "stepOrder": 1,
            "subjectTemplate": "{{firstName}}, quick question",
            "bodyTemplate": "Hi {{firstName}}, worth a chat about {{companyName}}?\n\nAlex",
            "variants": [
                {"key": "A", "weight": 50},
                {"key": "B", "weight": 50, "subjectTemplate": FASTER},
            ],
        },
        {"stepOrder": 2, "delayDays": 3, "subjectTemplate": "Re", "bodyTemplate": "Again"},
    ],
}


# Set-based, as 2,000 sends one by one would take most of the test's time.
_EARLIER = "FROM unnest(ARRAY['A', 'B']) k, generate_series(1, 1000) n"
EARLIER_SENDS = (
    f"""INSERT INTO "Lead" (id, "workspaceId", email, "updatedAt")
        SELECT 'lead-' || k || n, 'w-ab', k || n || '@earlier.example', now() {_EARLIER}""",
    f"""INSERT INTO "GeneratedMessage" (id, "campaignId", "leadId", "stepId", subject, body,
            "variantKey")
        SELECT 'gm-' || k || n, 'camp-ab', 'lead-' || k || n, :step_id, 's', 'b', k {_EARLIER}""",
    f"""INSERT INTO "EmailSend" (id, "campaignId", "leadId", "stepId", "generatedMessageId",
            "toEmail", status, "sentAt", "variantKey", "updatedAt")
        SELECT 'es-' || k || n, 'camp-ab', 'lead-' || k || n, :step_id, 'gm-' || k || n,
               k || n || '@earlier.example', 'sent', now(), k, now() {_EARLIER}""",
    f"""INSERT INTO "EngagementEvent" (id, "emailSendId", type, "occurredAt", "dedupeKey")
        SELECT 'ev-' || k || n, 'es-' || k || n, 'reply', now(), 'test:' || k || n {_EARLIER}
        WHERE n <= CASE k WHEN 'A' THEN 20 ELSE 200 END""",
)


@pytest.fixture
def llm(run_settings):
    with FakeOpenAI() as server:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=server.base_url)
        yield server


def seed(sessions, n: int) -> dict[str, str]:
    """The campaign with n due leads; returns each lead's variant by the assignment's hash."""
    with sessions.begin() as session:
        camp = create_campaign(session, parse_campaign(CAMPAIGN))
        ws = session.get(Workspace, "w-ab")
        enrolments = [
            factories.enrolment(
                session, camp, factories.lead(session, ws, email=f"l{i}@buyer.example")
            )
            for i in range(n)
        ]
        step_id, variants = _step_variants(session)
    expected = {}
    for cl in enrolments:
        variant = assign_variant(variants, step_id=step_id, campaign_lead_id=cl.id)
        assert variant is not None
        expected[cl.leadId] = variant.key
    return expected


def _step_variants(session) -> tuple[str, list[StepVariant]]:
    rows = session.scalars(select(SequenceStepVariant)).all()
    return rows[0].stepId, [StepVariant(key=v.key, weight=v.weight) for v in rows]


def written(sessions) -> dict[str, tuple[str | None, str | None, str]]:
    """Per lead: its current step-1 message's variant, its send's, and the subject."""
    with sessions() as session:
        rows = session.execute(
            select(
                GeneratedMessage.leadId,
                GeneratedMessage.variantKey,
                EmailSend.variantKey,
                GeneratedMessage.subject,
            )
            .join(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(GeneratedMessage.status != "superseded")
        ).all()
    return {lead: (message, send, subject) for lead, message, send, subject in rows}


def test_each_lead_is_written_in_its_variant_and_keeps_it(llm, sessions):
    expected = seed(sessions, 12)
    assert set(expected.values()) == {"A", "B"}  # both variants are in the test

    counts = asyncio.run(process_campaign_sends(campaign_id="camp-ab"))["camp-ab"]

    assert counts.scheduled == 12
    rows = written(sessions)
    assert {lead: row[0] for lead, row in rows.items()} == expected
    assert {lead: row[1] for lead, row in rows.items()} == expected
    for key, _, subject in rows.values():
        # B overrides the subject; A is the step's own.
        assert subject == ("A faster way for Acme Corp?" if key == "B" else "Sarah, quick question")

    # New instructions, and B switched off: the hash would now put every lead in A, but a
    # backfill rewrites each message in the variant its send was written in.
    with sessions.begin() as session:
        session.execute(
            update(SequenceStepVariant).where(SequenceStepVariant.key == "B").values(weight=0)
        )
        session.execute(
            update(SequenceStep).where(SequenceStep.stepOrder == 1).values(aiInstructions="Short")
        )
    regenerated = asyncio.run(process_campaign_sends(campaign_id="camp-ab", regenerate_step=1))[
        "camp-ab"
    ]
    assert regenerated.regenerated == 12
    assert written(sessions) == rows
    with sessions() as session:
        history = session.execute(
            select(GeneratedMessage.leadId, GeneratedMessage.variantKey).where(
                GeneratedMessage.status == "superseded"
            )
        ).all()
    assert dict(history) == expected  # the superseded messages were in the same variants


def test_auto_select_records_the_winner_and_later_leads_all_get_it(llm, sessions):
    rules = {**CAMPAIGN["sendingRules"], "abTest": {"autoSelect": True, "minSendsPerVariant": 1000}}
    with sessions.begin() as session:
        camp = create_campaign(session, parse_campaign({**CAMPAIGN, "sendingRules": rules}))
        ws = session.get(Workspace, "w-ab")
        step_id = session.scalars(select(SequenceStepVariant.stepId)).first()
        # Earlier leads: 1,000 sends per variant, B replied to 200 times, A to 20.
        for statement in EARLIER_SENDS:
            session.execute(text(statement), {"step_id": step_id})
        for i in range(6):
            factories.enrolment(
                session, camp, factories.lead(session, ws, email=f"new{i}@buyer.example")
            )

    asyncio.run(process_campaign_sends(campaign_id="camp-ab"))

    with sessions() as session:
        step = session.scalars(select(SequenceStep).where(SequenceStep.stepOrder == 1)).one()
        new = session.scalars(
            select(GeneratedMessage.variantKey)
            .join(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(EmailSend.toEmail.like("new%"))
        ).all()
    assert step.variantWinner == "B" and step.variantWinnerAt is not None
    figures = step.variantWinnerFigures
    assert figures is not None and figures["winner"] == "B" and figures["metric"] == "reply rate"
    assert [(v["key"], v["sends"], v["successes"]) for v in figures["variants"]] == [
        ("A", 1000, 20),
        ("B", 1000, 200),
    ]
    assert new == ["B"] * 6
