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
# Health is of the mailbox's handovers begun in the window, whatever their outcome (a 5xx refusal
# is a send that bounced), and how many of those have drawn a hard bounce (a bounce without a
# kind is hard, as ingestion treats it) or a complaint so far: a cohort, so each mailbox costs a
# range of the index the caps use (the pipeline writes `EmailSend.mailbox` lowercased), however
# long its history.
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
           h.sends, h.hard_bounces, h.complaints
    FROM w
    LEFT JOIN "Mailbox" m ON m."workspaceId" = w.workspace AND lower(m.email) = w.email
    LEFT JOIN "DeliveryCounter" k ON k.scope = 'mailbox' AND k.key = w.email AND k.day = w.day
    CROSS JOIN LATERAL (
        SELECT count(*) AS sends,
               count(*) FILTER (WHERE g.hard_bounced) AS hard_bounces,
               count(*) FILTER (WHERE g.complained) AS complaints
        FROM "EmailSend" s
        JOIN "Campaign" c ON c.id = s."campaignId" AND c."workspaceId" = w.workspace
        CROSS JOIN LATERAL (
            SELECT bool_or(e.type = 'bounce'
                           AND e.metadata ->> 'bounceKind' IS DISTINCT FROM 'soft') AS hard_bounced,
                   bool_or(e.type = 'complaint') AS complained
            FROM "EngagementEvent" e
            WHERE e."emailSendId" = s.id
        ) g
        WHERE s.mailbox = w.email AND s."attemptedAt" >= :since
          AND s.status IN ('sent', 'failed', 'unknown')
    ) h
    """
).bindparams(bindparam("since", type_=UTCDateTime))


# The planner takes a JSON recordset for 100 rows, which puts this statement over
# jit_above_cost: against 20 mailboxes and 200,000 sends, compiling it took 1.2 s and running it
# 0.07 s. Off for this transaction only.
NO_JIT = text("SET LOCAL jit = off")


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
    session.execute(NO_JIT)
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
