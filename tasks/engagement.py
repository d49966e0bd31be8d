"""Prefect tasks of `ingest-engagement-events`: ingest a chunk, drain the webhook inbox.

Ingestion is idempotent (every event has a dedupe key), so each task may be retried freely.
A dry run does the same work in a transaction that is rolled back, so its counts are exact (its
replies are classified too, and the answers cached, but no event is announced).
"""

from datetime import datetime

from prefect import get_run_logger
from sqlalchemy.orm import Session

from core.engagement.config import IngestionConfig
from core.engagement.event_files import parse_record
from core.engagement.event_records import EventFormat
from core.engagement.events import NormalisedEvent
from core.engagement.report import IngestColumn, IngestReport, event_chunks
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.engagement import IngestResult, claim_inbox, ingest_events, mark_inbox
from tasks.database import database_task, in_transaction
from tasks.replies import announce_interest, classify_new_replies


def _report(result: IngestResult) -> IngestReport:
    report = IngestReport()
    for (source, kind, outcome), n in result.outcomes.items():
        report.count(source, kind, outcome, n)
    report.stopped.update(result.stopped)
    report.cancelled = result.cancelled
    report.intents.update(result.replies.intents)
    report.reply_actions.update(result.replies.actions)
    report.referred = result.replies.referred
    report.machine.update(result.machine)
    return report


@database_task("ingest-events")
async def ingest_chunk(
    database: DatabaseConfig,
    config: IngestionConfig,
    events: list[NormalisedEvent],
    *,
    dry_run: bool,
) -> IngestReport:
    """Record a chunk of events and apply their stop rules and reply intents, in one
    transaction; the LLM classifies the chunk's new replies first, when a key is set."""
    classified = await classify_new_replies(database, config.intent, events)

    def work(session: Session) -> IngestResult:
        return ingest_events(
            session,
            events,
            now=utcnow(),
            soft_bounce_limit=config.soft_bounce_limit,
            policy=config.intent.policy,
            classified=classified,
            machine_rules=config.machine,
        )

    result = await in_transaction(database, work, rollback=dry_run)
    if not dry_run:
        announce_interest(result.replies.interested)
    return _report(result)


@database_task("drain-webhook-inbox")
async def drain_webhook_inbox(
    database: DatabaseConfig,
    config: IngestionConfig,
    *,
    dry_run: bool,
    since: datetime | None,
    until: datetime | None,
) -> IngestReport:
    """Ingest stored webhook payloads, a batch per transaction, marking each one processed.

    A payload's events and its processed mark commit together: a crash leaves it unprocessed
    and the next run ingests it again, which the dedupe keys make harmless.
    """
    total = IngestReport()
    batch = config.inbox_batch

    def one_batch(session: Session) -> tuple[IngestReport, int]:
        rows = claim_inbox(session, limit=batch)
        report = IngestReport()
        done: dict[str, str | None] = {}
        events: list[NormalisedEvent] = []
        for inbox_id, provider, payload in rows:
            records = payload if isinstance(payload, list) else [payload]
            source = f"webhook:{provider}"
            parsed = [
                parse_record(record, EventFormat(provider), source=source, line=line)
                if isinstance(record, dict)
                else None
                for line, record in enumerate(records, start=1)
            ]
            for chunk in event_chunks(
                parsed, report, size=len(parsed) or 1, since=since, until=until
            ):
                events.extend(chunk)
            done[inbox_id] = None
        # Provider events carry no reply text, so the rules classify their replies (`other`:
        # a reply stops its lead, as it always did).
        result = ingest_events(
            session,
            events,
            now=utcnow(),
            soft_bounce_limit=config.soft_bounce_limit,
            policy=config.intent.policy,
            machine_rules=config.machine,
        )
        mark_inbox(session, done, now=utcnow())
        report.merge(_report(result))
        return report, len(rows)

    while True:
        report, payloads = await in_transaction(database, one_batch, rollback=dry_run)
        total.merge(report)
        # A dry run rolls its batch back, so the same payloads would come again.
        if payloads < batch or dry_run:
            break
    get_run_logger().info(
        "webhook inbox: %d new, %d duplicate, %d quarantined, %d malformed",
        total.total(IngestColumn.new),
        total.total(IngestColumn.duplicate),
        total.total(IngestColumn.quarantined),
        total.malformed_total,
    )
    return total
