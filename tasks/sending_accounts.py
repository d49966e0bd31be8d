"""The sending mailboxes of a claimed batch that have a `Mailbox` row: each one's status,
today's warm-up cap and its own SMTP transport, with its password resolved once.

A password reference that cannot be resolved (an unset variable, a missing Secret block) or
stored settings that are not usable make the mailbox `disconnected` with that reason, so its
sends wait instead of going out under another login.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

import anyio
from prefect import get_run_logger
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.campaigns.sending_rules import describe_errors, parse_sending_rules
from core.delivery.accounts import MailboxState, MailboxStates, mailbox_key
from core.delivery.plan import DueSend, delivery_rules_problem
from core.delivery.transport import TransportConfig
from core.mailboxes.check import PasswordUnavailableError
from core.mailboxes.mailbox_file import SmtpSpec
from core.settings import TransportKind
from core.statuses import MailboxStatus
from db.engine import DatabaseConfig
from db.queries.imap_checkpoints import MailboxInbox
from db.queries.sending_mailboxes import (
    SendingMailbox,
    disconnect_mailbox,
    read_sending_mailboxes,
)
from tasks.database import in_transaction
from tasks.mailbox_passwords import resolve_password


@dataclass
class SendingAccounts:
    """By (workspace id, lowercased address): each row's state, id and transport, and the IMAP
    folder of each active one that has IMAP."""

    states: dict[tuple[str, str], MailboxState] = field(default_factory=dict)
    ids: dict[tuple[str, str], str] = field(default_factory=dict)
    transports: dict[tuple[str, str], TransportConfig] = field(default_factory=dict)
    inboxes: dict[tuple[str, str], MailboxInbox] = field(default_factory=dict)


def wanted_mailboxes(sends: list[DueSend]) -> set[tuple[str, str]]:
    """Every sending mailbox the batch's campaigns may use, with its workspace."""
    wanted = set()
    for send in {s.campaignId: s for s in sends}.values():
        if delivery_rules_problem(send.sendingRules) is None:
            for mailbox in parse_sending_rules(send.sendingRules).sending_mailboxes():
                wanted.add(mailbox_key(send.workspaceId, mailbox.email))
    return wanted


def current_mailbox_states(
    session: Session, sends: list[DueSend], now: datetime, batch: MailboxStates
) -> dict[tuple[str, str], MailboxState]:
    """The statuses and caps of the sends' mailbox rows as they are now (a lane's refused
    handover asks: a circuit breaker or an operator may have paused one since the plan), with
    what the batch found out itself (an inbox it could not read) kept."""
    states = {}
    for row in read_sending_mailboxes(session, wanted_mailboxes(sends)):
        key = mailbox_key(row.workspace_id, row.email)
        unread = batch[key].unread if key in batch else None
        states[key] = MailboxState(row.status, row.status_reason, row.warmup.cap(now), unread)
    return states


async def resolve_sending_accounts(
    database: DatabaseConfig,
    sends: list[DueSend],
    base: TransportConfig | None,
    *,
    now: datetime,
) -> SendingAccounts:
    """Read the batch's mailbox rows and open the way to each active one's SMTP login.

    Without `base` (a dry run) only statuses and caps are read: nothing is resolved or written.
    Outside SMTP (TRANSPORT=outbox or console, for development) every mailbox keeps `base`, and
    only the statuses and caps apply.
    """
    wanted = wanted_mailboxes(sends)
    rows = await in_transaction(database, lambda session: read_sending_mailboxes(session, wanted))
    accounts = SendingAccounts()
    for row in rows:
        key = mailbox_key(row.workspace_id, row.email)
        accounts.ids[key] = row.id
        status, reason = row.status, row.status_reason
        if status is MailboxStatus.active and base and base.kind is TransportKind.smtp:
            try:
                accounts.transports[key] = await anyio.to_thread.run_sync(_transport, row, base)
            except PasswordUnavailableError as exc:
                status, reason = MailboxStatus.disconnected, str(exc)
                await _disconnect(database, row, reason, now)
        accounts.states[key] = MailboxState(status, reason, row.warmup.cap(now))
        if row.inbox is not None and status is MailboxStatus.active:
            accounts.inboxes[key] = row.inbox
    return accounts


def _transport(row: SendingMailbox, base: TransportConfig) -> TransportConfig:
    """The row's SMTP login, its password resolved; PasswordUnavailableError says why not."""
    try:
        spec = SmtpSpec.model_validate(row.smtp)
    except ValidationError as exc:
        problems = "; ".join(describe_errors(exc, "smtp"))
        raise PasswordUnavailableError(f"stored SMTP settings unusable: {problems}") from None
    return replace(
        base,
        host=spec.host,
        port=spec.port,
        security=spec.security,
        username=spec.username,
        password=resolve_password(spec.password),
    )


async def _disconnect(
    database: DatabaseConfig, row: SendingMailbox, reason: str, now: datetime
) -> None:
    def write(session: Session) -> bool:
        return disconnect_mailbox(session, row.id, reason=reason, now=now)

    if await in_transaction(database, write):
        get_run_logger().warning("mailbox %s disconnected: %s", row.email, reason)
