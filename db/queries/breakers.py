"""Circuit breakers: the figures of active mailboxes and campaigns over their window, and pausing
those that cross their lines, each once, with the figures as the reason.

A window starts 7 days ago, or at the last status change when that is later: a resume starts a
fresh one, so what tripped the breaker before it does not trip it again. A mailbox's or
campaign's sends are its handovers in the window that have an outcome (a 5xx refusal is a send
that bounced); its hard bounces and complaints are those sends' events, whenever they arrived
(a DSN or a complaint comes after its send): a cohort, as the run's mailbox table counts it
(db.queries.run_mailboxes). A bounce without a kind is hard, as ingestion treats it.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, bindparam, text
from sqlalchemy.orm import Session

from core.breakers import BreakerLines
from core.campaigns.sending_rules import campaign_lines
from core.mailboxes.health import HEALTH_WINDOW, MailboxHealth, breaker_reason
from core.statuses import CampaignStatus
from db.base import UTCDateTime
from db.queries.mailboxes import pause_campaign
from db.queries.sending_mailboxes import trip_mailbox

# The targets are the ids given and, in a sweep, every active mailbox and campaign with a hard
# bounce or complaint recorded in the last 7 days (a partial index holds exactly those events).
# Mailboxes come first, so two transactions that pause the same rows lock them in one order.
FIGURES = (
    text(
        """
    WITH bad AS (
        SELECT DISTINCT c."workspaceId", s.mailbox, s."campaignId"
        FROM "EngagementEvent" e
        JOIN "EmailSend" s ON s.id = e."emailSendId"
        JOIN "Campaign" c ON c.id = s."campaignId"
        WHERE :sweep AND e.type IN ('bounce', 'complaint') AND e."createdAt" >= :since
          AND (e.type = 'complaint' OR e.metadata ->> 'bounceKind' IS DISTINCT FROM 'soft')
    ), targets AS (
        SELECT 'mailbox' AS scope, m.id, m."workspaceId", m.email AS name,
               lower(m.email) AS mailbox, NULL::jsonb AS rules,
               GREATEST(:since, m."statusChangedAt") AS start
        FROM "Mailbox" m
        WHERE m.status = 'active'
          AND (m.id = ANY(CAST(:mailbox_ids AS text[]))
               OR EXISTS (SELECT 1 FROM bad
                          WHERE bad."workspaceId" = m."workspaceId"
                            AND bad.mailbox = lower(m.email)))
        UNION ALL
        SELECT 'campaign', c.id, c."workspaceId", c.name, NULL, c."sendingRules",
               GREATEST(:since, c."statusChangedAt")
        FROM "Campaign" c
        WHERE c.status = 'active'
          AND (c.id = ANY(CAST(:campaign_ids AS text[]))
               OR c.id IN (SELECT "campaignId" FROM bad))
    )
    SELECT t.scope, t.id, t."workspaceId", t.name, t.rules, t.start,
           count(x.id) AS sends,
           count(x.id) FILTER (WHERE g.hard_bounced) AS hard_bounces,
           count(x.id) FILTER (WHERE g.complained) AS complaints
    FROM targets t
    LEFT JOIN LATERAL (
        SELECT s.id FROM "EmailSend" s JOIN "Campaign" c ON c.id = s."campaignId"
        WHERE t.scope = 'mailbox' AND s.mailbox = t.mailbox AND s."attemptedAt" >= t.start
          AND s.status IN ('sent', 'failed', 'unknown') AND c."workspaceId" = t."workspaceId"
        UNION ALL
        SELECT s.id FROM "EmailSend" s
        WHERE t.scope = 'campaign' AND s."campaignId" = t.id AND s."attemptedAt" >= t.start
          AND s.status IN ('sent', 'failed', 'unknown')
    ) x ON true
    LEFT JOIN LATERAL (
        SELECT bool_or(e.type = 'bounce'
                       AND e.metadata ->> 'bounceKind' IS DISTINCT FROM 'soft') AS hard_bounced,
               bool_or(e.type = 'complaint') AS complained
        FROM "EngagementEvent" e
        WHERE e."emailSendId" = x.id
    ) g ON true
    GROUP BY t.scope, t.id, t."workspaceId", t.name, t.rules, t.start
    ORDER BY t.scope = 'campaign', t.id
    """
    )
    .bindparams(bindparam("since", type_=UTCDateTime), bindparam("sweep", type_=Boolean))
    .columns(start=UTCDateTime)
)


class BreakerScope(StrEnum):
    mailbox = "mailbox"
    campaign = "campaign"


@dataclass(frozen=True)
class Trip:
    """A mailbox or campaign paused by its breaker in this call, and the figures that did it."""

    scope: BreakerScope
    id: str
    workspace_id: str
    name: str  # the mailbox's address, or the campaign's name
    health: MailboxHealth
    lines: BreakerLines
    since: datetime  # where its window began
    reason: str


def trip_breakers(
    session: Session,
    *,
    now: datetime,
    mailbox_lines: BreakerLines,
    mailbox_ids: Collection[str] = (),
    campaign_ids: Collection[str] = (),
    sweep: bool = False,
) -> list[Trip]:
    """Weigh the given active mailboxes and campaigns (with `sweep`, also every one with a recent
    hard bounce or complaint) against their lines, and pause each that crosses them.

    Returns only the pauses this call made: a row another run paused first is not repeated.
    A campaign's lines are its `sendingRules.protection`; every mailbox's are `mailbox_lines`.
    """
    window = now - HEALTH_WINDOW
    params = {
        "since": window,
        "sweep": sweep,
        "mailbox_ids": list(mailbox_ids),
        "campaign_ids": list(campaign_ids),
    }
    trips = []
    for row in session.execute(FIGURES, params):
        scope = BreakerScope(row.scope)
        health = MailboxHealth(
            sends=row.sends, hard_bounces=row.hard_bounces, complaints=row.complaints
        )
        lines = mailbox_lines if scope is BreakerScope.mailbox else campaign_lines(row.rules)
        reason = breaker_reason(health, lines, since=row.start if row.start > window else None)
        if reason is None:
            continue
        if scope is BreakerScope.mailbox:
            paused = trip_mailbox(session, row.id, reason=reason, now=now)
        else:
            before = pause_campaign(session, row.id, reason=reason, now=now)
            paused = before is CampaignStatus.active
        if paused:
            trips.append(
                Trip(scope, row.id, row.workspaceId, row.name, health, lines, row.start, reason)
            )
    return trips
