"""The `reconcile-unknown-sends` task: settle `unknown` sends from their mailboxes' Sent folders.

Reads the `unknown` sends, searches each mailbox's Sent folder once (a thread per mailbox, a few
at a time), lets core decide each send, and writes the verdicts in one fenced transaction. A
mailbox that cannot be read is reported and skipped; its sends stay `unknown` for the next run.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
from prefect import get_run_logger
from prefect.artifacts import acreate_table_artifact
from pydantic import ValidationError

from core.campaigns.sending_rules import describe_errors
from core.delivery.reconcile import (
    Outcome,
    ReconcileConfig,
    ReconciledSend,
    Reconciliation,
    UnknownHandover,
    reconcile,
    unsearchable_reason,
)
from core.mailboxes.check import PasswordUnavailableError
from core.mailboxes.mailbox_file import ImapSpec
from core.mailboxes.sent_folder import SentFolderError, search_sent_folder
from core.statuses import EmailSendStatus
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries import reconcile as queries
from tasks.database import database_task, in_transaction
from tasks.mailbox_passwords import resolve_password

ARTIFACT_KEY = "send-scheduled-emails-reconciled"


@dataclass
class _Mailbox:
    """The unknown sends of one mailbox, and the IMAP settings to search its Sent folder with."""

    id: str
    email: str
    imap: dict[str, object]
    sends: list[UnknownHandover] = field(default_factory=list)


@database_task("reconcile-unknown-sends")
async def reconcile_unknown_sends(
    database: DatabaseConfig, config: ReconcileConfig
) -> list[ReconciledSend]:
    """Every `unknown` send whose mailbox has IMAP: found in Sent is `sent`, long absent is
    `scheduled` again (same Message-ID); the rest stay `unknown`. Returns one line per send."""
    rows = await in_transaction(
        database, lambda session: queries.read_unknown_sends(session, limit=config.max_sends)
    )
    lines: list[ReconciledSend] = []
    mailboxes: dict[str, _Mailbox] = {}
    for row in rows:
        why = unsearchable_reason(
            mailbox=row.mailbox,
            has_row=row.mailbox_id is not None,
            has_imap=row.imap is not None,
            complete=row.send is not None,
        )
        if why is not None or row.send is None or row.mailbox_id is None or row.imap is None:
            lines.append(
                _line(row.send_id, row.campaign_id, row.mailbox, Outcome.unsearchable, why)
            )
            continue
        box = mailboxes.setdefault(
            row.mailbox_id, _Mailbox(row.mailbox_id, row.send.mailbox, row.imap)
        )
        box.sends.append(row.send)

    verdicts: list[Reconciliation] = []
    limiter = anyio.CapacityLimiter(config.max_connections)

    async def search(box: _Mailbox) -> None:
        found = await anyio.to_thread.run_sync(_search, box, config, limiter=limiter)
        if isinstance(found, str):
            # The row id, not the address: logs carry no addresses (the artifact names it).
            get_run_logger().warning("Mailbox %s: Sent folder not searched: %s", box.id, found)
            for send in box.sends:
                lines.append(
                    _line(
                        send.send_id,
                        send.campaign_id,
                        box.email,
                        Outcome.unsearchable,
                        f"Sent folder not searched: {found}",
                    )
                )
            return
        folder, filed = found
        now = utcnow()
        grace = timedelta(seconds=config.grace_seconds)
        for send in box.sends:
            witness_filed = None if send.witness is None else send.witness in filed
            verdict = reconcile(
                send,
                filed.get(send.message_id),
                witness_filed=witness_filed,
                folder=folder,
                now=now,
                grace=grace,
            )
            if verdict.status is EmailSendStatus.unknown:  # nothing to write: checked next run
                lines.append(
                    _line(
                        send.send_id, send.campaign_id, box.email, verdict.outcome, verdict.reason
                    )
                )
            else:
                verdicts.append(verdict)

    async with anyio.create_task_group() as group:
        for box in mailboxes.values():
            group.start_soon(search, box)

    now = utcnow()
    written = await in_transaction(
        database, lambda session: queries.settle_unknown_sends(session, verdicts, now=now)
    )
    for verdict in verdicts:
        send = verdict.send
        taken = send.send_id not in written
        lines.append(
            _line(
                send.send_id,
                send.campaign_id,
                send.mailbox,
                Outcome.taken if taken else verdict.outcome,
                "another run settled it, or it moved on meanwhile" if taken else verdict.reason,
            )
        )
    await _publish(lines)
    return lines


def _search(box: _Mailbox, config: ReconcileConfig) -> tuple[str, dict[str, datetime]] | str:
    """The Sent folder's name and what it holds of these sends and their witnesses, or why it
    could not be read."""
    try:
        spec = ImapSpec.model_validate(box.imap)
    except ValidationError as exc:
        return "stored IMAP settings not usable: " + "; ".join(describe_errors(exc))
    try:
        password = resolve_password(spec.password)
        answer = search_sent_folder(spec, password, _wanted(box.sends), timeout=config.imap_timeout)
    except (PasswordUnavailableError, SentFolderError) as exc:
        return str(exc)
    return answer.folder, answer.found


def _wanted(sends: list[UnknownHandover]) -> list[str]:
    """Each send's Message-ID and each distinct witness, once."""
    ids = [s.message_id for s in sends] + [s.witness for s in sends if s.witness is not None]
    return list(dict.fromkeys(ids))


def _line(
    send_id: str, campaign_id: str, mailbox: str | None, outcome: Outcome, reason: str | None
) -> ReconciledSend:
    return ReconciledSend(
        send_id=send_id,
        campaign_id=campaign_id,
        mailbox=mailbox or "-",
        outcome=outcome,
        reason=reason or "",
    )


async def _publish(lines: list[ReconciledSend]) -> None:
    logger = get_run_logger()
    counts = {outcome: sum(line.outcome is outcome for line in lines) for outcome in Outcome}
    if lines:
        logger.info(
            "reconciled unknown sends: "
            + ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
        )
    await acreate_table_artifact(
        key=ARTIFACT_KEY,
        table=[line.model_dump() for line in lines] or [{"send_id": "(no unknown sends)"}],
        description=(
            "Unknown sends looked up in their mailbox's Sent folder: sent (found), rescheduled"
            " (absent past RECONCILE_GRACE_SECONDS), or left unknown and why"
        ),
    )
