"""Prefect tasks of `ingest-engagement-events`: ingest a chunk, drain the webhook inbox.

Ingestion is idempotent (every event has a dedupe key), so each task may be retried freely.
A dry run does the same work in a transaction that is rolled back, so its counts are exact.
"""

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import anyio
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from core.engagement.event_files import EventFormat, parse_record
from core.engagement.events import NormalisedEvent
from core.engagement.report import IngestReport, event_chunks
from db.base import utcnow
from db.queries.engagement import IngestResult, claim_inbox, ingest_events, mark_inbox
from tasks.database import session_factory

T = TypeVar("T")


def _in_transaction(work: Callable[[Session], T], *, dry_run: bool) -> T:
    with session_factory()() as session:
        transaction = session.begin()
        try:
            outcome = work(session)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
        return outcome


def _report(result: IngestResult) -> IngestReport:
    report = IngestReport()
    for (source, kind, outcome), n in result.outcomes.items():
        report.count(source, kind, outcome, n)
    report.stopped.update(result.stopped)
    report.cancelled = result.cancelled
    return report


@task(name="ingest-events", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
async def ingest_chunk(
    events: list[NormalisedEvent], *, dry_run: bool, soft_bounce_limit: int
) -> IngestReport:
    """Record a chunk of events and apply their stop rules, in one transaction."""

    def work(session: Session) -> IngestResult:
        return ingest_events(session, events, now=utcnow(), soft_bounce_limit=soft_bounce_limit)

    result = await anyio.to_thread.run_sync(lambda: _in_transaction(work, dry_run=dry_run))
    return _report(result)


@task(name="drain-webhook-inbox", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
async def drain_webhook_inbox(
    *,
    batch: int,
    dry_run: bool,
    soft_bounce_limit: int,
    since: datetime | None,
    until: datetime | None,
) -> IngestReport:
    """Ingest stored webhook payloads, a batch per transaction, marking each one processed.

    A payload's events and its processed mark commit together: a crash leaves it unprocessed
    and the next run ingests it again, which the dedupe keys make harmless.
    """
    total = IngestReport()

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
        result = ingest_events(session, events, now=utcnow(), soft_bounce_limit=soft_bounce_limit)
        mark_inbox(session, done, now=utcnow())
        report.merge(_report(result))
        return report, len(rows)

    while True:
        report, payloads = await anyio.to_thread.run_sync(
            lambda: _in_transaction(one_batch, dry_run=dry_run)
        )
        total.merge(report)
        # A dry run rolls its batch back, so the same payloads would come again.
        if payloads < batch or dry_run:
            break
    get_run_logger().info(
        "webhook inbox: %d new, %d duplicate, %d quarantined, %d malformed",
        total.total("new"),
        total.total("duplicate"),
        total.total("quarantined"),
        total.malformed_total,
    )
    return total
