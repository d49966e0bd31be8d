"""What the unsubscribe endpoint reads: whether a send exists, and whom it went to."""

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Campaign, EmailSend


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
