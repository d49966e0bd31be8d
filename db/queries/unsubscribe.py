"""Unsubscribing the address a send went to: the one operation behind the unsubscribe link and a
reply that asks to be removed, and what the endpoint reads (whether a send exists, whom it went
to)."""

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.statuses import CampaignLeadStatus, EngagementType
from db.models import Campaign, EmailSend
from db.queries.stops import SendStop, StopResult, stop_send_recipient

# The stop reason and the Suppression reason of every unsubscribe.
UNSUBSCRIBE_REASON = "unsubscribed"


class SendRecipient(NamedTuple):
    """The address a send went to, and the workspace it is stopped in."""

    workspace_id: str
    email: str


def send_exists(session: Session, send_id: str) -> bool:
    """Whether the EmailSend exists."""
    return session.scalar(select(EmailSend.id).where(EmailSend.id == send_id)) is not None


def send_recipient(session: Session, send_id: str) -> SendRecipient | None:
    """The workspace and address of a send; None for an unknown send."""
    row = session.execute(
        select(Campaign.workspaceId, EmailSend.toEmail)
        .join(Campaign, Campaign.id == EmailSend.campaignId)
        .where(EmailSend.id == send_id)
    ).first()
    return None if row is None else SendRecipient(*row)


def unsubscribe_recipient(
    session: Session, send_id: str, *, source: str, now: datetime
) -> tuple[StopResult, bool] | None:
    """Unsubscribe the address a send went to; None for an unknown send.

    Suppresses the address in the campaign's workspace, stops every enrolment of its lead there
    as `unsubscribed`, cancels their scheduled sends and records one `unsubscribe` event for the
    send (`unsubscribe:<send>`, with `source` in its metadata; the bool says it is new). Each
    step is idempotent, so doing it again changes nothing.
    """
    recipient = send_recipient(session, send_id)
    if recipient is None:
        return None
    stop = SendStop(
        send_id=send_id,
        workspace_id=recipient.workspace_id,
        email=recipient.email,
        event=EngagementType.unsubscribe,
        status=CampaignLeadStatus.unsubscribed,
        reason=UNSUBSCRIBE_REASON,
        metadata={"source": source},
    )
    return stop_send_recipient(session, stop, now=now)
