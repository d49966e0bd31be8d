"""Claiming due leads: one statement, `FOR UPDATE SKIP LOCKED` inside a CTE, with a lease.

A claim stamps each row with a lease (`claimedUntil`) and a fresh `claimToken`. Every later
write is conditional on that token, so a worker that died (its lease expired and another run
re-claimed the lead) writes nothing: its update touches 0 rows.
"""

from datetime import datetime, timedelta
from uuid import uuid4

from sqlalchemy import Text, bindparam, text
from sqlalchemy.orm import Session

from core.due_lead import DueLead
from db.base import UTCDateTime

# Shared by the claim and the dry-run preview so both see the same due set and the same columns.
_DUE = """
    SELECT cl.id
    FROM "CampaignLead" cl
    JOIN "Campaign" c ON c.id = cl."campaignId"
    WHERE cl.status = 'active'
      AND cl."nextScheduledDate" IS NOT NULL
      AND cl."nextScheduledDate" <= :as_of
      AND c.status = 'active'
      AND (CAST(:campaign_id AS text) IS NULL OR cl."campaignId" = :campaign_id)
      AND (cl."claimedUntil" IS NULL OR cl."claimedUntil" < :now)
    ORDER BY cl."nextScheduledDate"
    LIMIT :limit
"""
_DETAILS = """
    SELECT x.id AS "campaignLeadId", x."campaignId", x."leadId", c."workspaceId",
           x."currentStepOrder" AS "stepOrder", x."nextScheduledDate", x.attempts,
           l.email, l."firstName", l."lastName", l."companyName", l.title, l.industry,
           l."companySize", l.website, l.timezone, l."customFields",
           c.goal, c."sendingRules",
           s.id AS "stepId", s."subjectTemplate", s."bodyTemplate", s."aiInstructions",
           n."delayDays" AS "nextStepDelayDays"
    FROM {source} x
    JOIN "Lead" l ON l.id = x."leadId"
    JOIN "Campaign" c ON c.id = x."campaignId"
    LEFT JOIN "SequenceStep" s
           ON s."campaignId" = x."campaignId" AND s."stepOrder" = x."currentStepOrder"
    LEFT JOIN "SequenceStep" n
           ON n."campaignId" = x."campaignId" AND n."stepOrder" = x."currentStepOrder" + 1
    ORDER BY x."nextScheduledDate", x.id
"""
_TYPES = (
    bindparam("as_of", type_=UTCDateTime),
    bindparam("now", type_=UTCDateTime),
    bindparam("campaign_id", type_=Text),
)
CLAIM_DUE_LEADS = (
    text(
        f"""
    WITH due AS ({_DUE} FOR UPDATE OF cl SKIP LOCKED),
    claimed AS (
        UPDATE "CampaignLead" cl
        SET "claimedBy" = :worker, "claimedUntil" = :lease_until, "claimToken" = :token
        FROM due WHERE cl.id = due.id
        RETURNING cl.*
    )
    {_DETAILS.format(source="claimed")}
    """
    )
    .bindparams(*_TYPES, bindparam("lease_until", type_=UTCDateTime))
    .columns(nextScheduledDate=UTCDateTime)
)
PREVIEW_DUE_LEADS = (
    text(
        f"""
    WITH due AS ({_DUE}),
    previewed AS (SELECT cl.* FROM "CampaignLead" cl JOIN due ON due.id = cl.id)
    {_DETAILS.format(source="previewed")}
    """
    )
    .bindparams(*_TYPES)
    .columns(nextScheduledDate=UTCDateTime)
)


def claim_due_leads(
    session: Session,
    *,
    as_of: datetime,
    now: datetime,
    limit: int,
    worker: str,
    lease: timedelta,
    campaign_id: str | None = None,
) -> tuple[str, list[DueLead]]:
    """Claim up to limit due leads, oldest first; returns the claim token and the leads."""
    token = uuid4().hex
    params = {
        "as_of": as_of,
        "now": now,
        "limit": limit,
        "campaign_id": campaign_id,
        "worker": worker,
        "token": token,
        "lease_until": now + lease,
    }
    rows = session.execute(CLAIM_DUE_LEADS, params).mappings()
    return token, [DueLead.model_validate(row) for row in rows]


def preview_due_leads(
    session: Session, *, as_of: datetime, now: datetime, limit: int, campaign_id: str | None = None
) -> list[DueLead]:
    """The leads a claim would take, without taking them (dry runs)."""
    params = {"as_of": as_of, "now": now, "limit": limit, "campaign_id": campaign_id}
    rows = session.execute(PREVIEW_DUE_LEADS, params).mappings()
    return [DueLead.model_validate(row) for row in rows]
