"""The `ingest-engagement-events` flow: opens, clicks, replies, bounces, unsubscribes, complaints
from event files, webhooks and inbound mail (the IMAP_* inbox and every active sending mailbox)
-> EngagementEvents and stopped leads.
"""

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import anyio
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from pydantic import Field

from core.engagement.config import EVENT_CHUNK, IngestionConfig
from core.engagement.event_files import EventFileError, read_event_file
from core.engagement.event_records import EventFormat
from core.engagement.events import NormalisedEvent
from core.engagement.inbound_sources import read_mail_path
from core.engagement.report import (
    IngestColumn,
    IngestReport,
    MailboxOutcome,
    event_chunks,
)
from db.engine import DatabaseConfig
from flows.cutoff import aware
from flows.settings import run_settings, warn_if_unpriced
from tasks.breakers import trip_circuit_breakers
from tasks.engagement import drain_webhook_inbox, ingest_chunk
from tasks.in_flight import InFlight
from tasks.mailbox_replies import catch_up_mailbox, list_imap_mailboxes
from tasks.unwalked import unwalked

# Chunks being written at once: two while the next one is read. Each has its own transaction;
# their stop rules take turns (see db.queries.engagement).
IN_FLIGHT_CHUNKS = 3


class EngagementSource(StrEnum):
    # Every live source: the webhook inbox, the IMAP_* inbox when set, each active mailbox's IMAP.
    live = "live"
    file = "file"  # an event export (JSONL, JSON, CSV) at `path`
    # A Maildir directory or mbox file at `path`; the value is what deployments and scripts pass.
    mail_folder = "mailbox"
    webhooks = "webhooks"
    imap = "imap"


@flow(name="ingest-engagement-events", log_prints=False)
async def ingest_engagement_events(
    source: EngagementSource = EngagementSource.live,
    path: str | None = None,
    format: EventFormat | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    chunk_size: Annotated[int, Field(ge=1, le=50_000)] = EVENT_CHUNK,
) -> IngestReport:
    """Read engagement events, record each once, and stop the leads they say to stop.

    Args:
        source: live drains the webhook inbox and reads IMAP (the IMAP_HOST inbox when set,
            and the new mail of every active sending mailbox with IMAP); file reads an event
            export at path, mailbox the inbound mail of a Maildir or mbox at path; webhooks and
            imap one live source each.
        path: The event file (file) or Maildir or mbox (mailbox).
        format: Event file format; empty detects it per record.
        since: Only events at or after this.
        until: Only events before this.
        dry_run: Match and count in a rolled-back transaction; keep nothing.
        chunk_size: Events per task and transaction.
    """
    logger = get_run_logger()
    if source in (EngagementSource.file, EngagementSource.mail_folder) and not path:
        raise ValueError(f"source {source.value!r} needs a path")
    settings = run_settings()
    database = DatabaseConfig.from_settings(settings)
    config = IngestionConfig.from_settings(settings)
    warn_if_unpriced(config.intent.llm)  # replies are classified with the same model
    since, until = aware(since), aware(until)
    report = IngestReport()

    async def ingest(records: Iterable[object]) -> None:
        # Reading and parsing (a file, a mail folder, IMAP) runs on a worker thread and never
        # blocks the event loop; chunks already read are written meanwhile, on their own
        # connections, so the database and the parsing overlap.
        chunks = iter(event_chunks(records, report, size=chunk_size, since=since, until=until))
        written: list[IngestReport] = []

        async def write(chunk: list[NormalisedEvent]) -> None:
            written.append(await ingest_chunk(database, config, unwalked(chunk), dry_run=dry_run))

        async with InFlight(IN_FLIGHT_CHUNKS) as in_flight:
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
                await in_flight.add(write(chunk))
        # Merged once reading is done: the reader counts malformed lines into the same report.
        for chunk_report in written:
            report.merge(chunk_report)

    if source is EngagementSource.file:
        try:
            await ingest(read_event_file(Path(str(path)), format))
        except (EventFileError, OSError) as exc:
            # The whole file is unusable: one clear line in the run's log and state.
            raise ValueError(f"cannot read {path}: {exc}") from None
    elif source is EngagementSource.mail_folder:
        await ingest(result for _, result in read_mail_path(Path(str(path))))
    if source in (EngagementSource.live, EngagementSource.webhooks):
        report.merge(
            await drain_webhook_inbox(database, config, dry_run=dry_run, since=since, until=until)
        )
    if source in (EngagementSource.imap, EngagementSource.live):
        inboxes = await list_imap_mailboxes(database)
        if config.imap.host or (source is EngagementSource.imap and not inboxes):
            imap = config.imap.reader(since=since.date() if since else None)
            await ingest(result for _, result in imap.fetch())
        # A checkpoint moves only after a full, committed read: a dry run or a since/until
        # window filters events out, and those must still be read by the next run.
        keep = not dry_run and since is None and until is None
        for inbox in inboxes:
            read = await catch_up_mailbox(inbox, ingest, database, keep=keep)
            if read.outcome is MailboxOutcome.skipped:
                logger.warning(
                    "mailbox %s (workspace %s) skipped: %s", read.email, read.workspace, read.answer
                )
            report.mailboxes.append(read)
    if not dry_run:
        # Property 18: the bounces and complaints just recorded pause the mailboxes and
        # campaigns they take over the line, before the next delivery run's handovers.
        await trip_circuit_breakers(database, settings.mailbox_breaker_lines)

    await _publish(report, dry_run=dry_run)
    logger.info(
        "new %d, duplicate %d, quarantined %d, malformed %d, ignored %d; stopped %s",
        report.total(IngestColumn.new),
        report.total(IngestColumn.duplicate),
        report.total(IngestColumn.quarantined),
        report.malformed_total,
        sum(report.ignored.values()),
        dict(report.stopped) or "none",
    )
    return report


async def _publish(report: IngestReport, *, dry_run: bool) -> None:
    await acreate_table_artifact(
        key="ingest-engagement-events",
        table=report.table() or [{"source": "(no events)"}],
        description="Events by source and type: new, duplicate, quarantined",
    )
    await acreate_table_artifact(
        key="ingest-engagement-events-malformed",
        table=[m.model_dump() for m in report.malformed] or [{"source": "(none)"}],
        description=f"Malformed records ({report.malformed_total}; the first 500 listed)",
    )
    if report.mailboxes:
        await acreate_table_artifact(
            key="ingest-engagement-events-mailboxes",
            table=[m.model_dump(mode="json") for m in report.mailboxes],
            description="Sending mailboxes: read, unchanged (one EXAMINE), or skipped and why",
        )
    await acreate_markdown_artifact(
        key="ingest-engagement-events-summary",
        markdown=report.summary_markdown(dry_run=dry_run),
        description="What this run did",
    )
