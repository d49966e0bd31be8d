"""The `send-scheduled-emails` flow: due sends -> checks, windows, caps -> delivered, once."""

from datetime import datetime, timedelta
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.runtime import flow_run
from pydantic import Field, SecretBytes

from core.delivery.config import DeliveryConfig
from core.delivery.mailbox_report import mailbox_table
from core.delivery.reconcile import ReconcileConfig
from core.delivery.report import (
    COLUMNS,
    DeliveryColumn,
    DeliveryReport,
    PlannedSend,
    planned_report,
    summary_markdown,
)
from core.delivery.transport import TransportConfig
from core.delivery.unsubscribe import secret_from_settings
from core.engagement.config import IngestionConfig
from core.settings import Settings
from db.base import utcnow
from db.engine import DatabaseConfig
from flows.cutoff import run_cutoff
from flows.settings import run_settings
from tasks.breakers import trip_circuit_breakers
from tasks.delivery import (
    check_sending_rules,
    claim_due_sends,
    deliver_sends,
    preview_deliveries,
    rescue_abandoned_sends,
    run_transports,
)
from tasks.engagement import drain_webhook_inbox
from tasks.mailbox_report import read_mailbox_facts
from tasks.reconcile import reconcile_unknown_sends
from tasks.unwalked import unwalked


def delivery_config(settings: Settings) -> DeliveryConfig:
    """The run's delivery config: knobs, transport, and the unsubscribe key (kept in .data/
    when UNSUBSCRIBE_SECRET is unset, so links already sent keep working)."""
    return DeliveryConfig(
        public_base_url=settings.public_base_url,
        transport=TransportConfig.from_settings(settings),
        unsubscribe_secret=SecretBytes(secret_from_settings(settings)),
        max_connections=settings.smtp_max_connections,
        max_attempts=settings.max_delivery_attempts,
        handover_group=settings.delivery_handover_group,
        lease_seconds=settings.claim_lease_seconds,
        breaker_lines=settings.mailbox_breaker_lines,
    )


def _cutoff(as_of: datetime | None) -> datetime:
    """The run's due cutoff, never later than now: nothing is ever sent before its time."""
    return min(run_cutoff(as_of), utcnow())


@flow(name="send-scheduled-emails", log_prints=False)
async def send_scheduled_emails(
    as_of: datetime | None = None,
    campaign_id: str | None = None,
    max_sends: Annotated[int, Field(ge=1)] = 10_000,
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 500,
    max_wait_seconds: Annotated[int, Field(ge=0, le=3600)] = 240,
    dry_run: bool = False,
) -> DeliveryReport:
    """Claim due sends in batches, re-check each lead, respect windows, caps and gaps, deliver.

    Args:
        as_of: Due cutoff (capped at now); empty means the run's scheduled start.
        campaign_id: Only this campaign.
        max_sends: Stop after claiming this many.
        batch_size: Sends per claim.
        max_wait_seconds: How long the run may wait for mailbox gaps; later slots are deferred.
        dry_run: Plan and show it in an artifact; send and write nothing.
    """
    logger = get_run_logger()
    cutoff = _cutoff(as_of)
    deadline = utcnow() + timedelta(seconds=max_wait_seconds)
    settings = run_settings()
    database = DatabaseConfig.from_settings(settings)
    config = delivery_config(settings)
    replies = IngestionConfig.from_settings(settings)  # how replies read before handover count
    # A claim must outlive the run's longest wait for a mailbox gap, plus the usual lease.
    lease = config.lease_seconds + max_wait_seconds
    worker = f"flow-run/{flow_run.id or 'local'}"
    logger.info(
        "due as of %s, campaign %s, batch %d, waiting up to %ds%s",
        cutoff.isoformat(),
        campaign_id or "(all)",
        batch_size,
        max_wait_seconds,
        " (dry run)" if dry_run else "",
    )
    report = DeliveryReport()
    if not dry_run:
        for unknown in await rescue_abandoned_sends(database):
            report.count(
                unknown.campaign_id, unknown.mailbox, DeliveryColumn.unknown, unknown.reason
            )
            report.unknown.append(unknown)
        # Property 17: unknown sends settled from their mailboxes' Sent folders, before the claim
        # so a send scheduled again goes out in this run.
        await reconcile_unknown_sends(database, ReconcileConfig.from_settings(settings))
        # Property 18: bounces and complaints that reached the webhook inbox since the last
        # ingestion, or were recorded any other way, pause the mailboxes and campaigns they take
        # over the line before this run hands anything over.
        await drain_webhook_inbox(
            database, IngestionConfig.from_settings(settings), dry_run=False, since=None, until=None
        )
        await trip_circuit_breakers(database, settings.mailbox_breaker_lines)
    blocked = await check_sending_rules(
        database, cutoff=cutoff, campaign_id=campaign_id, dry_run=dry_run
    )
    previews: list[PlannedSend] = []
    remaining = max_sends
    # Each mailbox's SMTP connections stay logged in from one batch to the next.
    async with run_transports():
        while remaining > 0:
            claim = await claim_due_sends(
                database,
                cutoff=cutoff,
                limit=min(batch_size, remaining),
                worker=worker,
                lease_seconds=lease,
                campaign_id=campaign_id,
                blocked=sorted(blocked),
                dry_run=dry_run,
            )
            if not claim.sends:
                break
            remaining -= len(claim.sends)
            if dry_run:
                # Nothing is claimed, so one preview of up to max_sends is the whole plan.
                previews = await preview_deliveries(unwalked(claim), database, deadline=deadline)
                break
            report.merge(
                await deliver_sends(unwalked(claim), database, config, replies, deadline=deadline)
            )

    await _publish(report, blocked, previews, database, cutoff=cutoff, dry_run=dry_run)
    logger.info(
        "; ".join(f"{column} {report.total(column)}" for column in COLUMNS)
        + (f"; {len(blocked)} campaigns paused by their sendingRules" if blocked else "")
    )
    return report


async def _publish(
    report: DeliveryReport,
    blocked: dict[str, tuple[str, int]],
    previews: list[PlannedSend],
    database: DatabaseConfig,
    *,
    cutoff: datetime,
    dry_run: bool,
) -> None:
    rows = report.table()
    for campaign, (problem, waiting) in sorted(blocked.items()):
        if waiting:
            rows.append(
                {"campaign_id": campaign, "mailbox": "-"}
                | dict.fromkeys(COLUMNS, 0)
                | {DeliveryColumn.deferred: waiting, "why": f"paused: {problem}"}
            )
    await acreate_table_artifact(
        key="send-scheduled-emails",
        table=rows or [{"campaign_id": "(none due)"}],
        description=f"Sends per campaign and mailbox, due as of {cutoff.isoformat()}",
    )
    # A dry run's table is its plan's: `sent` is what would be sent.
    per_mailbox = planned_report(previews) if dry_run else report
    mailboxes = []
    if per_mailbox.rows:
        facts = await read_mailbox_facts(database, unwalked(per_mailbox))
        mailboxes = mailbox_table(per_mailbox, facts)
    scope = "Dry run, the plan per sending mailbox" if dry_run else "Per sending mailbox"
    await acreate_table_artifact(
        key="send-scheduled-emails-mailboxes",
        table=mailboxes or [{"mailbox": "(none used)"}],
        description=f"{scope}: sent, deferred and why, bounced; today's cap and use; 7-day"
        " hard bounces and complaints; status and reason",
    )
    await acreate_table_artifact(
        key="send-scheduled-emails-unknown",
        table=[u.model_dump() for u in report.unknown] or [{"send_id": "(none)"}],
        description="Handovers with an unknown outcome: review, never resent automatically",
    )
    await acreate_markdown_artifact(
        key="send-scheduled-emails-summary",
        markdown=summary_markdown(report, cutoff=cutoff.isoformat(), dry_run=dry_run),
        description="What this run did",
    )
    if dry_run:
        await acreate_table_artifact(
            key="send-scheduled-emails-preview",
            table=[p.model_dump() for p in previews] or [{"send_id": "(none due)"}],
            description="Dry run: what would be sent, deferred or cancelled",
        )
