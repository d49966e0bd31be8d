"""A/B variants in the database: `campaign create` writes them, every claim loads them with the
step's winner, and a written message and its send record the lead's variant."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.campaigns.campaign_file import parse_campaign
from db.models import EmailSend, GeneratedMessage, SequenceStep, SequenceStepVariant, Workspace
from db.queries.campaigns import create_campaign
from db.queries.claims import claim_due_leads, preview_due_leads
from db.queries.generation import record_messages
from db.queries.variants import record_winner
from tests import factories
from tests.integration.test_claims import LEASE, write_for

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
CAMPAIGN = {
    "workspace": {"id": "w-ab", "name": "W"},
    "id": "camp-ab",
    "name": "AB",
    "status": "active",
    "steps": [
        {
            "stepOrder": 1,
            "subjectTemplate": "{{firstName}}, quick question",
            "bodyTemplate": "Hi {{firstName}}",
            "variants": [
                {"key": "B", "weight": 50, "subjectTemplate": "A faster way for {{companyName}}?"},
                {"key": "A", "weight": 50},
            ],
        },
        {"stepOrder": 2, "delayDays": 3, "subjectTemplate": "Re", "bodyTemplate": "Again"},
    ],
}


def _create(sessions, leads: int = 4) -> str:
    with sessions.begin() as session:
        camp = create_campaign(session, parse_campaign(CAMPAIGN))
        ws = session.get(Workspace, "w-ab")
        for n in range(leads):
            ld = factories.lead(session, ws, email=f"l{n}@x.io")
            factories.enrolment(session, camp, ld, due=NOW - timedelta(minutes=1))
        return camp.id


def test_campaign_create_writes_each_steps_variants(sessions):
    _create(sessions, leads=0)
    with sessions() as session:
        rows = session.execute(
            select(SequenceStep.stepOrder, SequenceStepVariant)
            .join(SequenceStepVariant, SequenceStepVariant.stepId == SequenceStep.id)
            .order_by(SequenceStepVariant.key)
        ).all()
    assert [(order, v.key, v.weight, v.subjectTemplate, v.bodyTemplate) for order, v in rows] == [
        (1, "A", 50, None, None),
        (1, "B", 50, "A faster way for {{companyName}}?", None),
    ]


def test_the_claim_loads_the_steps_variants_and_its_winner(sessions):
    campaign_id = _create(sessions)
    with sessions.begin() as session:
        leads = preview_due_leads(session, as_of=NOW, now=NOW, limit=10, campaign_id=campaign_id)
    assert len(leads) == 4
    assert all([v.key for v in lead.variants] == ["A", "B"] for lead in leads)
    assert all(lead.variantWinner is None and lead.variantKey is None for lead in leads)
    step_id = leads[0].stepId
    assert step_id is not None
    figures = {"metric": "reply_rate", "p_value": 0.01}
    with sessions.begin() as session:
        assert record_winner(session, step_id=step_id, key="B", figures=figures, now=NOW)
        # The first decision stands, and a key the step has not is never recorded.
        assert not record_winner(session, step_id=step_id, key="A", figures={}, now=NOW)
    with sessions.begin() as session:
        _, claimed = claim_due_leads(
            session, as_of=NOW, now=NOW, limit=10, worker="w", lease=LEASE, campaign_id=campaign_id
        )
        step = session.get(SequenceStep, step_id)
        assert step is not None
        assert (step.variantWinner, step.variantWinnerAt, step.variantWinnerFigures) == (
            "B",
            NOW,
            figures,
        )
    assert {lead.variantWinner for lead in claimed} == {"B"}
    assert {lead.in_variant().variantKey for lead in claimed} == {"B"}


def test_a_written_message_and_its_send_record_the_variant(sessions):
    campaign_id = _create(sessions, leads=2)
    with sessions.begin() as session:
        token, leads = claim_due_leads(
            session, as_of=NOW, now=NOW, limit=10, worker="w", lease=LEASE, campaign_id=campaign_id
        )
        writes = [
            replace(write_for(lead), variantKey=lead.in_variant().variantKey) for lead in leads
        ]
        record_messages(session, token=token, now=NOW, writes=writes)
    expected = {lead.leadId: lead.in_variant().variantKey for lead in leads}
    assert set(expected.values()) <= {"A", "B"} and None not in expected.values()
    with sessions() as session:
        messages = dict(
            session.execute(select(GeneratedMessage.leadId, GeneratedMessage.variantKey)).all()
        )
        sends = dict(session.execute(select(EmailSend.leadId, EmailSend.variantKey)).all())
    assert messages == sends == expected
