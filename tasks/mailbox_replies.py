"""Prefect tasks that read the sending mailboxes' IMAP folders: list them, read one's new mail,
record how far it was read once its events are stored. Ingestion reads every mailbox this way,
and delivery each mailbox it is about to send from (tasks.replies_first).
"""

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.campaigns.sending_rules import describe_errors
from core.engagement.config import IMAPConfig, read_new_mail
from core.engagement.inbound_sources import IMAPCheckpoint, InboundSourceError, NewMail
from core.engagement.report import MailboxOutcome, MailboxRead
from core.mailboxes.check import PasswordUnavailableError
from core.mailboxes.mailbox_file import ImapSpec
from core.mailboxes.secrets import masked
from db.engine import DatabaseConfig
from db.queries.imap_checkpoints import (
    MailboxInbox,
    read_imap_mailboxes,
    save_imap_checkpoint,
)
from tasks.database import database_task, in_transaction
from tasks.mailbox_passwords import resolve_password


@dataclass(frozen=True)
class Unreadable:
    """Why a mailbox's folder was not read: the server's answer, or the setting at fault."""

    answer: str


@database_task("list-imap-mailboxes")
async def list_imap_mailboxes(database: DatabaseConfig) -> list[MailboxInbox]:
    """Every mailbox with IMAP settings, paused ones too, and its checkpoint."""
    return await in_transaction(database, read_imap_mailboxes, rollback=True)


def _read(inbox: MailboxInbox) -> NewMail | Unreadable:
    """The mailbox's mail after its checkpoint, or why it could not be read (never retried:
    the next read tries again)."""
    try:
        spec = ImapSpec.model_validate(inbox.imap)
    except ValidationError as exc:
        return Unreadable(f"stored IMAP settings not usable: {'; '.join(describe_errors(exc))}")
    try:
        # A prefect-secret: reference is loaded with its own event loop: this is a worker thread.
        password = resolve_password(spec.password)
    except PasswordUnavailableError as exc:
        return Unreadable(str(exc))
    try:
        return read_new_mail(IMAPConfig.from_mailbox(spec, password), inbox.checkpoint)
    except (InboundSourceError, ValueError) as exc:
        # A server may echo what it was sent; the password never reaches a log or an artifact.
        return Unreadable(masked(str(exc), password.get_secret_value()))


@database_task("save-imap-checkpoint")
async def save_checkpoint(
    database: DatabaseConfig, inbox: MailboxInbox, checkpoint: IMAPCheckpoint
) -> bool:
    """Record how far the mailbox was read; False when its folder or login changed meanwhile."""

    def work(session: Session) -> bool:
        return save_imap_checkpoint(session, inbox, checkpoint)

    return await in_transaction(database, work)


async def catch_up_mailbox(
    inbox: MailboxInbox,
    ingest: Callable[[Iterable[object]], Awaitable[None]],
    database: DatabaseConfig,
    *,
    keep: bool,
) -> MailboxRead:
    """Ingest one mailbox's new mail, then move its checkpoint; an unreadable one is `skipped`.

    `ingest` returns once every event is committed, so a checkpoint never passes a message
    whose events are not stored: a reader that starts from it (another run, another flow) has
    nothing to miss. Two readers at once read the same messages, whose events are recorded once
    (dedupe keys), and keep the higher UID.
    """
    # A plain thread, not a task run: delivery reads each mailbox before every batch, and an
    # unchanged folder must cost its one round trip, not a handful of calls to the Prefect API.
    mail = await anyio.to_thread.run_sync(_read, inbox)
    if isinstance(mail, Unreadable):
        return MailboxRead(
            email=inbox.email,
            workspace=inbox.workspace_id,
            outcome=MailboxOutcome.skipped,
            answer=mail.answer,
        )
    await ingest(mail.results)
    if keep and mail.checkpoint != inbox.checkpoint:
        await save_checkpoint(database, inbox, mail.checkpoint)
    return MailboxRead(
        email=inbox.email,
        workspace=inbox.workspace_id,
        outcome=MailboxOutcome.read if mail.searched else MailboxOutcome.unchanged,
        messages=len(mail.results),
        answer=f"UIDVALIDITY {mail.checkpoint.uid_validity}, last UID {mail.checkpoint.last_uid}",
    )
