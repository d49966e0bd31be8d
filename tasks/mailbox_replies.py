"""Prefect tasks that read the sending mailboxes' IMAP folders for ingestion: list them, read
one's new mail, record how far it was read once its events are stored.
"""

from dataclasses import dataclass

import anyio
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.campaigns.sending_rules import describe_errors
from core.engagement.config import IMAPConfig, read_new_mail
from core.engagement.inbound_sources import IMAPCheckpoint, InboundSourceError, NewMail
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


# Not retried: an unreachable mailbox is reported and skipped, and the next run tries again.
@task(name="read-mailbox-mail", cache_policy=NO_CACHE, persist_result=False)
async def read_mailbox_mail(inbox: MailboxInbox) -> NewMail | Unreadable:
    """The mailbox's mail after its checkpoint, or why it could not be read."""
    return await anyio.to_thread.run_sync(_read, inbox)


def _read(inbox: MailboxInbox) -> NewMail | Unreadable:
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
