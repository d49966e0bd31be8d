"""The database itself refuses what would make the pipeline unsafe."""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from db.models import EmailSend, GeneratedMessage, SequenceStep
from tests import factories


@pytest.fixture
def world(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws)
        ld = factories.lead(session, ws, email="Sarah@Acme.example")
        factories.enrolment(session, camp, ld)
        step = session.scalars(
            select(SequenceStep).where(
                SequenceStep.campaignId == camp.id, SequenceStep.stepOrder == 1
            )
        ).one()
        return {"ws": ws, "campaign": camp, "lead": ld, "step": step}


def _fails(sessions, build, constraint: str) -> None:
    with pytest.raises(IntegrityError) as excinfo, sessions.begin() as session:
        build(session)
        session.flush()
    assert constraint in str(excinfo.value)


def test_one_enrolment_per_campaign_and_lead(sessions, world):
    _fails(
        sessions,
        lambda s: factories.enrolment(s, world["campaign"], world["lead"]),
        "CampaignLead_campaignId_leadId_key",
    )


def test_one_lead_per_address_in_a_workspace_whatever_the_case(sessions, world):
    _fails(
        sessions,
        lambda s: factories.lead(s, world["ws"], email="sarah@ACME.example"),
        "Lead_workspaceId_email_key",
    )
    with sessions.begin() as session:
        other = factories.workspace(session)
        factories.lead(session, other, email="sarah@acme.example")  # another workspace: fine


def test_one_step_per_position(sessions, world):
    _fails(
        sessions,
        lambda s: s.add(
            SequenceStep(
                campaignId=world["campaign"].id, stepOrder=1, subjectTemplate="s", bodyTemplate="b"
            )
        ),
        "SequenceStep_campaignId_stepOrder_key",
    )


def _message(world, status: str = "generated") -> GeneratedMessage:
    return GeneratedMessage(
        campaignId=world["campaign"].id,
        leadId=world["lead"].id,
        stepId=world["step"].id,
        subject="s",
        body="b",
        status=status,
    )


def _send(world, message: GeneratedMessage | None = None) -> EmailSend:
    return EmailSend(
        campaignId=world["campaign"].id,
        leadId=world["lead"].id,
        stepId=world["step"].id,
        generatedMessageId=message.id if message else None,
        toEmail="sarah@acme.example",
    )


def test_one_current_message_per_step_but_superseded_history_is_kept(sessions, world):
    with sessions.begin() as session:
        session.add(_message(world, status="superseded"))
        session.add(_message(world, status="superseded"))
        session.add(_message(world))
    _fails(sessions, lambda s: s.add(_message(world)), "GeneratedMessage_current_key")


def test_one_send_per_campaign_lead_and_step(sessions, world):
    with sessions.begin() as session:
        session.add(_send(world))
    _fails(sessions, lambda s: s.add(_send(world)), "EmailSend_campaignId_leadId_stepId_key")


@pytest.mark.parametrize(
    ("table", "column", "constraint"),
    [
        ("Campaign", "status", "Campaign_status_check"),
        ("CampaignLead", "status", "CampaignLead_status_check"),
    ],
)
def test_unknown_status_is_refused(sessions, world, table, column, constraint):
    with pytest.raises(IntegrityError) as excinfo, sessions.begin() as session:
        session.execute(text(f'UPDATE "{table}" SET "{column}" = \'Active\''))
    assert constraint in str(excinfo.value)


def test_deleting_a_campaign_removes_its_steps_and_enrolments(sessions, world):
    with sessions.begin() as session:
        session.execute(text('DELETE FROM "Campaign"'))
    with sessions() as session:
        assert session.execute(text('SELECT count(*) FROM "SequenceStep"')).scalar() == 0
        assert session.execute(text('SELECT count(*) FROM "CampaignLead"')).scalar() == 0
        assert session.execute(text('SELECT count(*) FROM "Lead"')).scalar() == 1
