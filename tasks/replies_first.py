"""A reply in the inbox wins (property 16): before a delivery batch hands anything over, the new
mail of each of its active sending mailboxes with IMAP is read and recorded, exactly as
`ingest-engagement-events` does it (same reader, same checkpoint, same stop rules).

A reply that landed since the last ingestion then stops its lead first, and the handover guard
refuses the follow-up. A mailbox whose folder cannot be read keeps sending first emails, but its
follow-ups wait (the plan defers them with the reason): one of those leads may have answered.
"""

from collections.abc import Iterable
from dataclasses import replace

import anyio
from prefect import get_run_logger

from core.engagement.config import EVENT_CHUNK, IngestionConfig
from core.engagement.report import IngestColumn, IngestReport, MailboxOutcome, event_chunks
from db.engine import DatabaseConfig
from db.queries.imap_checkpoints import MailboxInbox
from tasks.engagement import ingest_chunk
from tasks.mailbox_replies import catch_up_mailbox
from tasks.sending_accounts import SendingAccounts


async def read_replies_first(
    database: DatabaseConfig,
    config: IngestionConfig,
    accounts: SendingAccounts,
    *,
    connections: int,
) -> None:
    """Record every new message of the batch's mailboxes, `connections` folders at a time.

    A mailbox whose folder could not be read gets the server's answer (or the setting at fault)
    as its state's `unread`, so the plan defers its follow-ups.
    """
    if not accounts.inboxes:
        return
    logger = get_run_logger()
    report = IngestReport()
    limiter = anyio.CapacityLimiter(connections)

    async def ingest(records: Iterable[object]) -> None:
        for chunk in event_chunks(records, report, size=EVENT_CHUNK):
            report.merge(await ingest_chunk(database, config, chunk, dry_run=False))

    async def read(key: tuple[str, str], inbox: MailboxInbox) -> None:
        async with limiter:
            read = await catch_up_mailbox(inbox, ingest, database, keep=True)
        report.mailboxes.append(read)
        if read.outcome is MailboxOutcome.skipped:
            accounts.states[key] = replace(accounts.states[key], unread=read.answer)
            logger.warning(
                "mailbox %s (workspace %s): new mail not read, its follow-ups wait: %s",
                read.email,
                read.workspace,
                read.answer,
            )

    async with anyio.create_task_group() as group:
        for key, inbox in accounts.inboxes.items():
            group.start_soon(read, key, inbox)
    if report.total(IngestColumn.new):
        logger.info(
            "inboxes read before handover: %d new events; stopped %s, %d pending sends cancelled",
            report.total(IngestColumn.new),
            dict(report.stopped) or "none",
            report.cancelled,
        )
