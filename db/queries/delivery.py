"""Delivery queries: claim due sends, find abandoned handovers, guard each handover, record results.

A claim stamps each send with a lease and a fresh `claimToken`, like the generation claim; every
later write is conditional on that token, so a run that lost its claim writes nothing. The
handover guard is one conditional UPDATE that commits `sending` only while the lead is still
sendable and the caps and the mailbox gap still allow it, under advisory locks on the mailbox
and the campaign, so two overlapping runs cannot both take the last slot of a cap.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import Text, bindparam, text
from sqlalchemy.orm import Session

from core.delivery import DueSend, MailboxUsage, Usage
from db.base import UTCDateTime
from db.queries.claims import leased_claim
from db.queries.rows import json_rows

# Statuses that count as a handover for caps and gaps (a 4xx retry goes back to scheduled).
HANDED_OVER = "('sending', 'sent', 'unknown', 'failed')"

_DUE = """
    SELECT s.id
    FROM "EmailSend" s
    JOIN "Campaign" c ON c.id = s."campaignId"
    WHERE s.status = 'scheduled'
      AND s."scheduledFor" <= :cutoff
      AND c.status <> 'paused'
      AND (CAST(:campaign_id AS text) IS NULL OR s."campaignId" = :campaign_id)
      AND NOT (s."campaignId" = ANY(CAST(:blocked AS text[])))
      AND (s."claimedUntil" IS NULL OR s."claimedUntil" < :now)
    ORDER BY s."scheduledFor"
    LIMIT :limit
"""
# The lead's first message in this campaign, for threading and for the sticky mailbox. The
# company check runs only for campaigns that ask for it (a JSON comparison, never a cast that
# a malformed rules object could break).
_DETAILS = f"""
    SELECT s.id AS "sendId", s."campaignId", cl.id AS "campaignLeadId", s."leadId",
           c."workspaceId", st."stepOrder", s."toEmail", l."firstName", l."lastName",
           l.timezone AS "leadTimezone", gm.subject, gm.body, s."scheduledFor", s.attempts,
           COALESCE(s.mailbox, root.mailbox) AS mailbox,
           cl.status AS "leadStatus", c.status AS "campaignStatus",
           EXISTS (SELECT 1 FROM "Suppression" x
                   WHERE x."workspaceId" = c."workspaceId"
                     AND lower(x.email) = lower(s."toEmail")) AS suppressed,
           (COALESCE(c."sendingRules" -> 'stopOnCompanyReply' = 'true'::jsonb, false) AND EXISTS (
                SELECT 1 FROM "CampaignLead" o JOIN "Lead" ol ON ol.id = o."leadId"
                WHERE o."campaignId" = s."campaignId" AND o.status = 'replied'
                  AND o."leadId" <> s."leadId"
                  AND split_part(lower(ol.email), '@', 2)
                      = split_part(lower(s."toEmail"), '@', 2))) AS "companyReplied",
           c."sendingRules",
           root."providerMessageId" AS "threadMessageId", root.subject AS "threadSubject"
    FROM {{source}} s
    JOIN "Campaign" c ON c.id = s."campaignId"
    JOIN "Lead" l ON l.id = s."leadId"
    JOIN "SequenceStep" st ON st.id = s."stepId"
    LEFT JOIN "CampaignLead" cl ON cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
    LEFT JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
    LEFT JOIN LATERAL (
        SELECT r."providerMessageId", rg.subject, r.mailbox
        FROM "EmailSend" r
        JOIN "SequenceStep" rs ON rs.id = r."stepId"
        LEFT JOIN "GeneratedMessage" rg ON rg.id = r."generatedMessageId"
        WHERE r."campaignId" = s."campaignId" AND r."leadId" = s."leadId" AND r.id <> s.id
          AND r.status IN {HANDED_OVER} AND r.status <> 'failed'
          AND r."providerMessageId" IS NOT NULL
        ORDER BY rs."stepOrder"
        LIMIT 1
    ) root ON true
    ORDER BY s."scheduledFor", s.id
"""
_TYPES = (
    bindparam("cutoff", type_=UTCDateTime),
    bindparam("now", type_=UTCDateTime),
    bindparam("campaign_id", type_=Text),
)
CLAIM_DUE_SENDS, PREVIEW_DUE_SENDS = leased_claim(
    "EmailSend", "s", _DUE, _DETAILS, *_TYPES, scheduledFor=UTCDateTime
)
ONE_SEND = (
    text(
        f"""
    WITH one AS (SELECT * FROM "EmailSend" WHERE id = :id AND "claimToken" = :token
                 AND status = 'scheduled')
    {_DETAILS.format(source="one")}
    """
    )
    .bindparams(bindparam("id", type_=Text))
    .columns(scheduledFor=UTCDateTime)
)

# A worker that set `sending` and vanished: the message may or may not have left, so the row
# becomes `unknown` for an operator, never `scheduled` again. The token stays, so the worker's
# own late result (a zombie that was only slow) can still resolve it.
RESCUE_ABANDONED = text(
    """
    UPDATE "EmailSend"
    SET status = 'unknown', "updatedAt" = :now,
        "statusReason" = 'delivery worker ' || coalesce("claimedBy", '?')
                         || ' vanished during the handover; check the mailbox before resending'
    WHERE status = 'sending' AND "claimedUntil" < :now
    RETURNING id AS "sendId", "campaignId", mailbox, "statusReason"
    """
).bindparams(bindparam("now", type_=UTCDateTime))

CAMPAIGN_RULES = text(
    """
    SELECT id, "sendingRules" FROM "Campaign"
    WHERE status NOT IN ('archived', 'draft')
      AND (CAST(:campaign_id AS text) IS NULL OR id = :campaign_id)
    """
).bindparams(bindparam("campaign_id", type_=Text))

# Sends of a campaign whose rules cannot be used keep their status; the reason is written on
# them so the web app and psql show why they wait.
MARK_BLOCKED = text(
    """
    UPDATE "EmailSend"
    SET "statusReason" = :reason
    WHERE "campaignId" = :campaign_id AND status = 'scheduled' AND "scheduledFor" <= :cutoff
    RETURNING id
    """
).bindparams(bindparam("cutoff", type_=UTCDateTime))

USAGE = text(
    f"""
    SELECT 'campaign' AS kind, x.key, count(s.id) AS today, NULL::timestamp AS last
    FROM jsonb_to_recordset(CAST(:campaigns AS jsonb)) AS x(key text, since timestamptz)
    LEFT JOIN "EmailSend" s ON s."campaignId" = x.key
         AND s."attemptedAt" >= (x.since AT TIME ZONE 'UTC') AND s.status IN {HANDED_OVER}
    GROUP BY x.key
    UNION ALL
    SELECT 'mailbox', x.key,
           count(s.id) FILTER (WHERE s."attemptedAt" >= (x.since AT TIME ZONE 'UTC')),
           max(s."attemptedAt")
    FROM jsonb_to_recordset(CAST(:mailboxes AS jsonb)) AS x(key text, since timestamptz)
    LEFT JOIN "EmailSend" s ON s.mailbox = x.key
         AND s."attemptedAt" >= (x.since AT TIME ZONE 'UTC') - interval '1 day'
         AND s.status IN {HANDED_OVER}
    GROUP BY x.key
    """
).columns(last=UTCDateTime)

SETTLE = text(
    """
    UPDATE "EmailSend" s
    SET status = x.status, "statusReason" = x.reason,
        "scheduledFor" = COALESCE(x.at AT TIME ZONE 'UTC', s."scheduledFor"),
        mailbox = COALESCE(x.mailbox, s.mailbox),
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x(id text, status text, reason text, at timestamptz, mailbox text)
    WHERE s.id = x.id AND s.id = ANY(CAST(:ids AS text[]))
      AND s."claimToken" = :token AND s.status = 'scheduled'
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

_LOCK = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('mailbox:' || :mailbox, 0)),"
    " pg_advisory_xact_lock(hashtextextended('campaign:' || :campaign_id, 0))"
)
# Everything that may have changed since the plan is checked again in the statement that
# commits `sending`: stops, suppression, the campaign's status, both daily caps, the gap. Only a
# handover sets `attemptedAt` (a 4xx retry clears it), so counting it needs no status filter,
# and each count stops at its limit.
HAND_OVER = text(
    """
    UPDATE "EmailSend" s
    SET status = 'sending', "providerMessageId" = :message_id, mailbox = :mailbox,
        "attemptedAt" = :now, "claimedUntil" = :lease_until, attempts = s.attempts + 1,
        "statusReason" = NULL, "updatedAt" = :now
    FROM "Campaign" c
    WHERE s.id = :id AND s."claimToken" = :token AND s.status = 'scheduled'
      AND c.id = s."campaignId" AND c.status = 'active'
      AND NOT EXISTS (SELECT 1 FROM "CampaignLead" cl
                      WHERE cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
                        AND cl.status NOT IN ('active', 'completed'))
      AND NOT EXISTS (SELECT 1 FROM "Suppression" x
                      WHERE x."workspaceId" = c."workspaceId"
                        AND lower(x.email) = lower(s."toEmail"))
      AND (SELECT count(*) FROM (SELECT 1 FROM "EmailSend" m
           WHERE m.mailbox = :mailbox AND m."attemptedAt" >= :day
           LIMIT :mailbox_limit) used) < :mailbox_limit
      AND (SELECT count(*) FROM (SELECT 1 FROM "EmailSend" m
           WHERE m."campaignId" = s."campaignId" AND m."attemptedAt" >= :day
           LIMIT :campaign_limit) used) < :campaign_limit
      AND (CAST(:gap_since AS timestamp) IS NULL
           OR NOT EXISTS (SELECT 1 FROM "EmailSend" m
                          WHERE m.mailbox = :mailbox AND m."attemptedAt" > :gap_since))
    RETURNING s.id
    """
).bindparams(
    bindparam("now", type_=UTCDateTime),
    bindparam("lease_until", type_=UTCDateTime),
    bindparam("day", type_=UTCDateTime),
    bindparam("gap_since", type_=UTCDateTime),
)

# Results of handovers, fenced by the token. `unknown` is accepted as a prior status so a slow
# worker's own late answer still lands after a rescue; a retry goes back to `scheduled`.
RECORD_RESULTS = text(
    """
    UPDATE "EmailSend" s
    SET status = x.status, "statusReason" = x.reason,
        "sentAt" = CASE WHEN x.status = 'sent' THEN :now ELSE s."sentAt" END,
        "scheduledFor" = COALESCE(x.at AT TIME ZONE 'UTC', s."scheduledFor"),
        "attemptedAt" = CASE WHEN x.status = 'scheduled' THEN NULL ELSE s."attemptedAt" END,
        "claimedBy" = CASE WHEN x.status = 'unknown' THEN s."claimedBy" END,
        "claimedUntil" = CASE WHEN x.status = 'unknown' THEN s."claimedUntil" END,
        "claimToken" = CASE WHEN x.status = 'unknown' THEN s."claimToken" END,
        "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x(id text, status text, reason text, at timestamptz)
    WHERE s.id = x.id AND s.id = ANY(CAST(:ids AS text[]))
      AND s."claimToken" = :token AND s.status IN ('sending', 'unknown')
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))


@dataclass(frozen=True)
class HandOver:
    """The guard's inputs for one send: what it commits and the limits it checks."""

    send_id: str
    campaign_id: str
    mailbox: str
    message_id: str
    day: datetime  # local midnight in the campaign's zone: both caps count from it
    mailbox_limit: int
    campaign_limit: int
    min_gap: timedelta


@dataclass(frozen=True)
class ResultRow:
    """A handover's result as a row update: sent, failed, unknown, or scheduled (a retry)."""

    send_id: str
    status: str
    reason: str | None = None
    at: datetime | None = None


def _due_params(
    cutoff: datetime, now: datetime, limit: int, campaign_id: str | None, blocked: list[str] | None
) -> dict[str, Any]:
    return {
        "cutoff": cutoff,
        "now": now,
        "limit": limit,
        "campaign_id": campaign_id,
        "blocked": blocked or [],
    }


def claim_due_sends(
    session: Session,
    *,
    cutoff: datetime,
    now: datetime,
    limit: int,
    worker: str,
    lease: timedelta,
    campaign_id: str | None = None,
    blocked: list[str] | None = None,
) -> tuple[str, list[DueSend]]:
    """Claim up to limit due sends, oldest first; returns the claim token and the sends."""
    token = uuid4().hex
    params = _due_params(cutoff, now, limit, campaign_id, blocked)
    params |= {"worker": worker, "token": token, "lease_until": now + lease}
    rows = session.execute(CLAIM_DUE_SENDS, params).mappings()
    return token, [DueSend.model_validate(row) for row in rows]


def preview_due_sends(
    session: Session,
    *,
    cutoff: datetime,
    now: datetime,
    limit: int,
    campaign_id: str | None = None,
    blocked: list[str] | None = None,
) -> list[DueSend]:
    """The sends a claim would take, without taking them (dry runs)."""
    params = _due_params(cutoff, now, limit, campaign_id, blocked)
    return [
        DueSend.model_validate(row) for row in session.execute(PREVIEW_DUE_SENDS, params).mappings()
    ]


def reload_send(session: Session, *, send_id: str, token: str) -> DueSend | None:
    """A claimed send as it is now, or None when it is no longer ours or no longer scheduled."""
    row = session.execute(ONE_SEND, {"id": send_id, "token": token}).mappings().first()
    return DueSend.model_validate(row) if row else None


def rescue_abandoned_sends(session: Session, *, now: datetime) -> list[dict[str, Any]]:
    """Mark `sending` rows whose lease ran out as `unknown`; returns them for the operator."""
    return [dict(row) for row in session.execute(RESCUE_ABANDONED, {"now": now}).mappings()]


def campaign_rules(session: Session, campaign_id: str | None) -> dict[str, Any]:
    """Every live campaign's raw sendingRules, by campaign id."""
    rows = session.execute(CAMPAIGN_RULES, {"campaign_id": campaign_id})
    return {campaign: rules for campaign, rules in rows}


def mark_blocked(session: Session, *, campaign_id: str, reason: str, cutoff: datetime) -> int:
    """Write why a blocked campaign's due sends wait; returns how many wait."""
    params = {"campaign_id": campaign_id, "reason": reason, "cutoff": cutoff}
    return len(session.execute(MARK_BLOCKED, params).all())


def usage_today(
    session: Session, *, campaigns: dict[str, datetime], mailboxes: dict[str, datetime]
) -> Usage:
    """Handovers since each campaign's and mailbox's local midnight, and each mailbox's last."""
    usage = Usage()
    if not campaigns and not mailboxes:
        return usage
    params = {
        "campaigns": json_rows([{"key": k, "since": v} for k, v in campaigns.items()]),
        "mailboxes": json_rows([{"key": k, "since": v} for k, v in mailboxes.items()]),
    }
    for kind, key, today, last in session.execute(USAGE, params):
        if kind == "campaign":
            usage.campaigns[key] = today
        else:
            usage.mailboxes[key] = MailboxUsage(today=today, last_attempt=last)
    return usage


def settle(session: Session, *, token: str, now: datetime, rows: list[dict[str, Any]]) -> set[str]:
    """Write deferrals, cancellations and failures decided before any handover."""
    if not rows:
        return set()
    # The id list lets the planner use the primary key: it cannot size a JSON recordset.
    params = {"rows": json_rows(rows), "ids": [r["id"] for r in rows], "token": token, "now": now}
    return set(session.scalars(SETTLE, params))


def hand_over(
    session: Session, handover: HandOver, *, token: str, now: datetime, lease: timedelta
) -> bool:
    """Commit-ready `sending` for one send, if it may still go out; False when it may not."""
    session.execute(_LOCK, {"mailbox": handover.mailbox, "campaign_id": handover.campaign_id})
    params = {
        "id": handover.send_id,
        "token": token,
        "now": now,
        "lease_until": now + lease,
        "message_id": handover.message_id,
        "mailbox": handover.mailbox,
        "day": handover.day,
        "mailbox_limit": handover.mailbox_limit,
        "campaign_limit": handover.campaign_limit,
        # No gap, no check: parallel connections of one mailbox stamp overlapping instants.
        "gap_since": now - handover.min_gap if handover.min_gap else None,
    }
    return session.execute(HAND_OVER, params).first() is not None


def record_results(
    session: Session, *, token: str, now: datetime, results: list[ResultRow]
) -> set[str]:
    """Write handover results; returns the send ids written (others were taken over)."""
    if not results:
        return set()
    rows = [{"id": r.send_id, "status": r.status, "reason": r.reason, "at": r.at} for r in results]
    params = {"rows": json_rows(rows), "ids": [r["id"] for r in rows], "token": token, "now": now}
    return set(session.scalars(RECORD_RESULTS, params))
