"""The sending mailboxes whose IMAP folder ingestion reads, and how far each has been read."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from core.engagement.inbound_sources import IMAPCheckpoint

# A row's IMAP settings in the mailbox file's shape (NULL without IMAP) and its checkpoint, as
# the columns `inbox_of` reads; validated by the caller: the web app may have written the row.
INBOX_COLUMNS = """
    m."imapUidValidity", m."imapLastUid",
    CASE WHEN m."imapHost" IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
        'host', m."imapHost", 'port', m."imapPort", 'ssl', m."imapSsl",
        'username', m."imapUsername", 'password', m."imapPasswordRef",
        'folder', m."imapFolder")) END AS imap
"""
IMAP_MAILBOXES = text(
    f"""
    SELECT m.id, m."workspaceId", m.email, {INBOX_COLUMNS}
    FROM "Mailbox" m
    WHERE m."imapHost" IS NOT NULL
    ORDER BY m."workspaceId", lower(m.email)
    """
)

# Only for the folder that was read: a `mailbox add` that moved the folder or login meanwhile
# reset the checkpoint, and it stays reset. Two runs at once keep the higher UID. updatedAt is
# left alone: it says when a person changed the mailbox, not when it was last read.
SAVE_CHECKPOINT = text(
    """
    UPDATE "Mailbox"
    SET "imapLastUid" = CASE WHEN "imapUidValidity" = :uid_validity
                             THEN GREATEST("imapLastUid", :last_uid) ELSE :last_uid END,
        "imapUidValidity" = :uid_validity
    WHERE id = :id
      AND ("imapHost", "imapUsername", "imapFolder")
          IS NOT DISTINCT FROM (CAST(:host AS text), CAST(:username AS text), CAST(:folder AS text))
    RETURNING id
    """
)


@dataclass(frozen=True)
class MailboxInbox:
    """A mailbox's stored IMAP settings (unvalidated) and its checkpoint, if any."""

    id: str
    workspace_id: str
    email: str
    imap: dict[str, object]
    checkpoint: IMAPCheckpoint | None


def read_imap_mailboxes(session: Session) -> list[MailboxInbox]:
    """Every mailbox with IMAP settings, by workspace and address, whatever its status.

    A pause stops sending, not listening: a reply to a paused or disconnected mailbox must
    still stop its lead before the mailbox sends again.
    """
    return [inbox for row in session.execute(IMAP_MAILBOXES) if (inbox := inbox_of(row))]


def inbox_of(row: Row[Any]) -> MailboxInbox | None:
    """A row's inbox from its id, workspaceId, email and INBOX_COLUMNS; None without IMAP."""
    if row.imap is None:
        return None
    return MailboxInbox(
        id=row.id,
        workspace_id=row.workspaceId,
        email=row.email,
        imap=row.imap,
        checkpoint=(
            IMAPCheckpoint(row.imapUidValidity, row.imapLastUid or 0)
            if row.imapUidValidity is not None
            else None
        ),
    )


def save_imap_checkpoint(session: Session, inbox: MailboxInbox, checkpoint: IMAPCheckpoint) -> bool:
    """Record how far the mailbox's folder was read; False when its folder or login changed."""
    imap = inbox.imap
    saved = session.execute(
        SAVE_CHECKPOINT,
        {
            "id": inbox.id,
            "uid_validity": checkpoint.uid_validity,
            "last_uid": checkpoint.last_uid,
            "host": imap.get("host"),
            "username": imap.get("username"),
            "folder": imap.get("folder"),
        },
    ).scalar_one_or_none()
    return saved is not None
