"""What the delivery run's per-mailbox table reads at the end of the run: each campaign's
workspace and rules, then, in one statement, each sending mailbox's row, today's count and its
last 7 days' health."""

from datetime import UTC, datetime

from sqlalchemy import ARRAY, Text, bindparam, text
from sqlalchemy.orm import Session

from core.delivery.mailbox_report import CampaignSender, MailboxKey, MailboxStanding
from core.mailboxes.health import HEALTH_WINDOW, MailboxHealth
from core.mailboxes.warmup import Warmup
from core.statuses import MailboxStatus
from db.base import UTCDateTime
from db.queries.rows import json_rows

SENDERS = text(
    """
    SELECT id, "workspaceId", "sendingRules" FROM "Campaign" WHERE id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=ARRAY(Text)))

# Today's count is the day's `DeliveryCounter` row, the one the handover guard enforces; before
# the day's first plan (a dry run rolls its plan back) it is what that row would start from.
# Health counts as `mailbox list` does, on the index the caps use (the pipeline writes
# `EmailSend.mailbox` lowercased): handovers begun in the window whatever their outcome (a 5xx
# refusal is a send that bounced), and the mailbox's sends with a hard bounce (a bounce without
# a kind is hard, as ingestion treats it) or a complaint that occurred in the window.
STANDINGS = text(
    """
    WITH w AS (
        SELECT x.workspace, x.email, x.day AT TIME ZONE 'UTC' AS day
        FROM jsonb_to_recordset(CAST(:wanted AS jsonb))
             AS x(workspace text, email text, day timestamptz)
    )
    SELECT w.workspace, w.email, m.status, m."statusReason", m."dailyLimit", m."warmupStart",
           m."warmupIncrement", m."warmupStartedAt",
           CASE WHEN w.day IS NOT NULL THEN COALESCE(k.used, (
               SELECT count(*) FROM "EmailSend" s
               WHERE s.mailbox = w.email AND s."attemptedAt" >= w.day)) END AS used_today,
           (SELECT count(*) FROM "EmailSend" s
            JOIN "Campaign" c ON c.id = s."campaignId" AND c."workspaceId" = w.workspace
            WHERE s.mailbox = w.email AND s."attemptedAt" >= :since
              AND s.status IN ('sent', 'failed', 'unknown')) AS sends,
           e.hard_bounces, e.complaints
    FROM w
    LEFT JOIN "Mailbox" m ON m."workspaceId" = w.workspace AND lower(m.email) = w.email
    LEFT JOIN "DeliveryCounter" k ON k.scope = 'mailbox' AND k.key = w.email AND k.day = w.day
    CROSS JOIN LATERAL (
        SELECT count(DISTINCT e."emailSendId") FILTER (
                   WHERE e.type = 'bounce'
                     AND e.metadata ->> 'bounceKind' IS DISTINCT FROM 'soft') AS hard_bounces,
               count(DISTINCT e."emailSendId") FILTER (WHERE e.type = 'complaint') AS complaints
        FROM "EmailSend" s
        JOIN "Campaign" c ON c.id = s."campaignId" AND c."workspaceId" = w.workspace
        JOIN "EngagementEvent" e ON e."emailSendId" = s.id
        WHERE s.mailbox = w.email AND s."attemptedAt" IS NOT NULL
          AND e.type IN ('bounce', 'complaint') AND e."occurredAt" >= :since
    ) e
    """
).bindparams(bindparam("since", type_=UTCDateTime))


def read_campaign_senders(session: Session, campaign_ids: set[str]) -> dict[str, CampaignSender]:
    """Each campaign's workspace and raw sendingRules, for the ids still in the database."""
    if not campaign_ids:
        return {}
    answer = session.execute(SENDERS, {"ids": sorted(campaign_ids)})
    return {
        row.id: CampaignSender(workspace_id=row.workspaceId, sending_rules=row.sendingRules)
        for row in answer
    }


def read_mailbox_standings(
    session: Session, days: dict[MailboxKey, datetime | None], *, now: datetime
) -> dict[MailboxKey, MailboxStanding]:
    """Each mailbox's row (if any), handovers since its counting day, and 7 days' health."""
    if not days:
        return {}
    wanted = [
        {"workspace": workspace, "email": email, "day": day}
        for (workspace, email), day in sorted(days.items())
    ]
    answer = session.execute(STANDINGS, {"wanted": json_rows(wanted), "since": now - HEALTH_WINDOW})
    standings = {}
    for row in answer:
        warmup = None
        if row.status is not None:
            warmup = Warmup(
                daily_limit=row.dailyLimit,
                start=row.warmupStart,
                increment=row.warmupIncrement,
                started_at=row.warmupStartedAt.replace(tzinfo=UTC),
            )
        standings[(row.workspace, row.email)] = MailboxStanding(
            status=MailboxStatus(row.status) if row.status is not None else None,
            reason=row.statusReason,
            warmup=warmup,
            used_today=row.used_today,
            health=MailboxHealth(
                sends=row.sends, hard_bounces=row.hard_bounces, complaints=row.complaints
            ),
        )
    return standings
