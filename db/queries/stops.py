"""Stopping a lead: suppression, enrolment status, pending sends, and the event that caused it.

Shared by every path that stops mail: a hard bounce during delivery, the unsubscribe endpoint,
and engagement ingestion (replies, complaints). Each function is one statement and idempotent,
so a retried or repeated stop changes nothing the second time.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.statuses import CampaignLeadStatus, EngagementType
from db.base import UTCDateTime, new_id

SUPPRESS = text(
    """
    INSERT INTO "Suppression" (id, "workspaceId", email, reason, "createdAt")
    VALUES (:id, :workspace_id, :email, :reason, :now)
    ON CONFLICT ("workspaceId", lower(email)) DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# Every enrolment of the workspace's lead with this address: the Lead table holds one lead per
# (workspace, lower(email)), so this is that lead in every campaign.
STOP_ADDRESS = text(
    """
    UPDATE "CampaignLead" cl
    SET status = :status, "stopReason" = :reason, "nextScheduledDate" = NULL,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM "Lead" l
    WHERE l.id = cl."leadId" AND l."workspaceId" = :workspace_id
      AND lower(l.email) = lower(:email)
      AND cl.status IN ('active', 'paused')
    RETURNING cl.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

STOP_ENROLMENTS = text(
    """
    UPDATE "CampaignLead" cl
    SET status = :status, "stopReason" = :reason, "nextScheduledDate" = NULL,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    WHERE cl.id = ANY(:ids) AND cl.status IN ('active', 'paused')
    RETURNING cl.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# A scheduled send claimed by a delivery run is cancelled too: that run's guard, which needs
# status 'scheduled', then refuses to hand it over.
CANCEL_PENDING = text(
    """
    UPDATE "EmailSend" s
    SET status = 'cancelled', "statusReason" = :reason,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM "CampaignLead" cl
    WHERE cl.id = ANY(:ids) AND s."campaignId" = cl."campaignId" AND s."leadId" = cl."leadId"
      AND s.status = 'scheduled'
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

ENROLMENTS_OF_ADDRESS = text(
    """
    SELECT cl.id FROM "CampaignLead" cl JOIN "Lead" l ON l.id = cl."leadId"
    WHERE l."workspaceId" = :workspace_id AND lower(l.email) = lower(:email)
    """
)

RECORD_EVENT = text(
    """
    INSERT INTO "EngagementEvent" (id, "emailSendId", type, "occurredAt", metadata, "createdAt")
    VALUES (:id, :send_id, :type, :occurred_at, CAST(:metadata AS jsonb), :now)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("occurred_at", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))


@dataclass(frozen=True)
class StopResult:
    """What a stop changed: enrolments stopped and sends cancelled (ids), and the suppression."""

    stopped: list[str]
    cancelled: list[str]
    suppressed: bool = False


def suppress_address(
    session: Session, *, workspace_id: str, email: str, reason: str, now: datetime
) -> bool:
    """Put an address on the workspace's Suppression list; False when it already was."""
    params = {"id": new_id(), "workspace_id": workspace_id, "email": email, "reason": reason}
    return session.execute(SUPPRESS, {**params, "now": now}).first() is not None


def stop_enrolments(
    session: Session,
    campaign_lead_ids: list[str],
    *,
    status: CampaignLeadStatus,
    reason: str,
    now: datetime,
) -> StopResult:
    """Stop these enrolments (if still active or paused) and cancel their scheduled sends."""
    params = {"ids": campaign_lead_ids, "status": status.value, "reason": reason, "now": now}
    stopped = list(session.scalars(STOP_ENROLMENTS, params))
    cancelled = list(session.scalars(CANCEL_PENDING, params))
    return StopResult(stopped=stopped, cancelled=cancelled)


def stop_address(
    session: Session,
    *,
    workspace_id: str,
    email: str,
    status: CampaignLeadStatus,
    reason: str,
    now: datetime,
) -> StopResult:
    """Suppress an address in its workspace, stop its lead everywhere, cancel pending sends."""
    suppressed = suppress_address(
        session, workspace_id=workspace_id, email=email, reason=reason, now=now
    )
    params = {
        "workspace_id": workspace_id,
        "email": email,
        "status": status.value,
        "reason": reason,
        "now": now,
    }
    stopped = list(session.scalars(STOP_ADDRESS, params))
    # Completed enrolments too: their last step's send may still be pending.
    enrolments = list(session.scalars(ENROLMENTS_OF_ADDRESS, params))
    cancelled = list(session.scalars(CANCEL_PENDING, {**params, "ids": enrolments}))
    return StopResult(stopped=stopped, cancelled=cancelled, suppressed=suppressed)


def record_event(
    session: Session,
    *,
    event_id: str,
    send_id: str,
    type: EngagementType,
    occurred_at: datetime,
    metadata: dict[str, Any] | None,
    now: datetime,
) -> bool:
    """Record an engagement event once: a deterministic id makes a repeat a no-op (False)."""
    params = {
        "id": event_id,
        "send_id": send_id,
        "type": type.value,
        "occurred_at": occurred_at,
        "metadata": json.dumps(metadata) if metadata is not None else None,
        "now": now,
    }
    return session.execute(RECORD_EVENT, params).first() is not None
