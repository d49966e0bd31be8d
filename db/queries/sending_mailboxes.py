"""The `Mailbox` rows a delivery run sends through: their SMTP login, status and warm-up, and
marking one `disconnected` when its login or server fails, or `paused` when its circuit breaker
trips."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Text, bindparam, text
from sqlalchemy.orm import Session

from core.mailboxes.warmup import Warmup
from core.statuses import MailboxStatus
from db.base import UTCDateTime
from db.queries.imap_checkpoints import INBOX_COLUMNS, MailboxInbox, inbox_of
from db.queries.rows import json_rows

# The SMTP settings come back in the mailbox file's shape, validated by the caller: the web
# app may have written the row.
SENDING = text(
    f"""
    SELECT m.id, m."workspaceId", m.email, m.status, m."statusReason", m."dailyLimit",
           m."warmupStart", m."warmupIncrement", m."warmupStartedAt",
           jsonb_build_object('host', m."smtpHost", 'port', m."smtpPort",
                              'security', m."smtpSecurity", 'username', m."smtpUsername",
                              'password', m."smtpPasswordRef") AS smtp,
           {INBOX_COLUMNS}
    FROM "Mailbox" m
    JOIN jsonb_to_recordset(CAST(:wanted AS jsonb)) AS w(workspace text, email text)
      ON m."workspaceId" = w.workspace AND lower(m.email) = lower(w.email)
    ORDER BY m."workspaceId", lower(m.email)
    """
)

# Only an active mailbox is disconnected or tripped: an operator's pause (and its reason) stays,
# and of two runs that find the same failure, the first one marks it.
LEAVE_ACTIVE = text(
    """
    UPDATE "Mailbox"
    SET status = :status, "statusReason" = :reason, "statusChangedAt" = :now, "updatedAt" = :now
    WHERE id = :id AND status = 'active'
    RETURNING id
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("reason", type_=Text))


@dataclass(frozen=True)
class SendingMailbox:
    """A mailbox row as delivery needs it; `smtp` is unvalidated (the mailbox file's shape)."""

    id: str
    workspace_id: str
    email: str
    status: MailboxStatus
    status_reason: str | None
    warmup: Warmup
    smtp: dict[str, object]
    # Its IMAP folder and checkpoint, when it has IMAP: read for replies before it sends.
    inbox: MailboxInbox | None = None


def read_sending_mailboxes(session: Session, wanted: set[tuple[str, str]]) -> list[SendingMailbox]:
    """The rows of the (workspace id, address in any case) pairs that have one."""
    if not wanted:
        return []
    rows = [{"workspace": workspace, "email": email} for workspace, email in sorted(wanted)]
    answer = session.execute(SENDING, {"wanted": json_rows(rows)})
    return [
        SendingMailbox(
            id=row.id,
            workspace_id=row.workspaceId,
            email=row.email,
            status=MailboxStatus(row.status),
            status_reason=row.statusReason,
            warmup=Warmup(
                daily_limit=row.dailyLimit,
                start=row.warmupStart,
                increment=row.warmupIncrement,
                started_at=row.warmupStartedAt.replace(tzinfo=UTC),
            ),
            smtp=row.smtp,
            inbox=inbox_of(row),
        )
        for row in answer
    ]


def disconnect_mailbox(session: Session, mailbox_id: str, *, reason: str, now: datetime) -> bool:
    """Mark an active mailbox `disconnected` with the reason; False when it was not active."""
    return _leave_active(session, mailbox_id, MailboxStatus.disconnected, reason, now)


def trip_mailbox(session: Session, mailbox_id: str, *, reason: str, now: datetime) -> bool:
    """Pause an active mailbox whose breaker tripped; False when it was not active."""
    return _leave_active(session, mailbox_id, MailboxStatus.paused, reason, now)


def _leave_active(
    session: Session, mailbox_id: str, status: MailboxStatus, reason: str, now: datetime
) -> bool:
    params = {"id": mailbox_id, "status": status.value, "reason": reason, "now": now}
    return session.execute(LEAVE_ACTIVE, params).first() is not None
