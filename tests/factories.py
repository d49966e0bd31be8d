"""Small builders for rows the tests need, written through the real models."""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import new_id, utcnow
from db.models import (
    Campaign,
    CampaignLead,
    EmailSend,
    EngagementEvent,
    GeneratedMessage,
    Lead,
    Mailbox,
    SequenceStep,
    Workspace,
)


def workspace(session: Session, **fields: Any) -> Workspace:
    row = Workspace(
        id=fields.pop("id", new_id()), name=fields.pop("name", "Acme outreach"), **fields
    )
    session.add(row)
    session.flush()
    return row


def campaign(
    session: Session, ws: Workspace, *, steps: int = 3, status: str = "active", **fields: Any
) -> Campaign:
    row = Campaign(
        workspaceId=ws.id, name=fields.pop("name", "Q4 outreach"), status=status, **fields
    )
    session.add(row)
    session.flush()
    for order in range(1, steps + 1):
        session.add(
            SequenceStep(
                campaignId=row.id,
                stepOrder=order,
                delayDays=0 if order == 1 else 3,
                subjectTemplate=f"Step {order} for {{{{firstName|there}}}}",
                bodyTemplate=f"Hi {{{{firstName|there}}}}, step {order} about {{{{companyName}}}}.",
                aiInstructions=f"Instructions for step {order}",
            )
        )
    session.flush()
    return row


def lead(session: Session, ws: Workspace, **fields: Any) -> Lead:
    row = Lead(
        workspaceId=ws.id,
        email=fields.pop("email", f"{new_id()[:10]}@example.com"),
        firstName=fields.pop("firstName", "Sarah"),
        companyName=fields.pop("companyName", "Acme Corp"),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def enrolment(
    session: Session, camp: Campaign, ld: Lead, *, due: datetime | None = None, **fields: Any
) -> CampaignLead:
    row = CampaignLead(
        campaignId=camp.id,
        leadId=ld.id,
        status=fields.pop("status", "active"),
        currentStepOrder=fields.pop("currentStepOrder", 1),
        nextScheduledDate=due or utcnow(),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def scheduled_send(
    session: Session,
    camp: Campaign,
    ld: Lead,
    *,
    step: int = 1,
    scheduled_for: datetime | None = None,
    subject: str = "Quick question",
    body: str = "Hi there,\n\nWorth a chat?\n\nAlex",
    **fields: Any,
) -> EmailSend:
    """A generated message and its scheduled send, as process-campaign-sends writes them."""
    step_row = session.scalars(
        select(SequenceStep).where(
            SequenceStep.campaignId == camp.id, SequenceStep.stepOrder == step
        )
    ).one()
    message = GeneratedMessage(
        campaignId=camp.id, leadId=ld.id, stepId=step_row.id, subject=subject, body=body
    )
    session.add(message)
    session.flush()
    row = EmailSend(
        campaignId=camp.id,
        leadId=ld.id,
        stepId=step_row.id,
        generatedMessageId=message.id,
        toEmail=fields.pop("toEmail", ld.email),
        status=fields.pop("status", "scheduled"),
        scheduledFor=scheduled_for or utcnow(),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def event(
    session: Session, send: EmailSend, kind: str, at: datetime, **metadata: Any
) -> EngagementEvent:
    """An engagement event on a send, as ingestion records it (metadata: url, bounceKind...)."""
    row = EngagementEvent(
        emailSendId=send.id,
        type=kind,
        occurredAt=at,
        dedupeKey=f"test:{new_id()}",
        source="test",
        eventMetadata=metadata or None,
    )
    session.add(row)
    session.flush()
    return row


def mailbox(
    session: Session,
    workspace_id: str,
    email: str,
    *,
    imap_port: int | None = None,
    smtp_port: int | None = None,
    **imap: Any,
) -> Mailbox:
    """A sending mailbox with password references; with IMAP on 127.0.0.1 when a port is given,
    and its SMTP login on a loopback server without TLS when an SMTP port is given."""
    row = Mailbox(
        workspaceId=workspace_id,
        email=email,
        smtpHost="127.0.0.1",
        smtpUsername=email,
        smtpPasswordRef="env:TEST_SMTP_PASSWORD",
    )
    if smtp_port is not None:
        row.smtpPort, row.smtpSecurity = smtp_port, "none"
    if imap_port is not None:
        row.imapHost, row.imapPort, row.imapSsl = "127.0.0.1", imap_port, False
        row.imapUsername = imap.pop("username", email)
        row.imapPasswordRef = imap.pop("passwordRef", "env:TEST_IMAP_PASSWORD")
        row.imapFolder = "INBOX"
    session.add(row)
    session.flush()
    return row
