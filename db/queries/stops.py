"""Stopping leads: suppression, enrolment status, pending sends, and the event that caused it.

Shared by every path that stops mail: a hard bounce during delivery, the unsubscribe endpoint,
and engagement ingestion (replies, bounces, unsubscribes, complaints). Every statement is
set-based over a JSON array and idempotent, so a repeated stop changes nothing.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.statuses import CampaignLeadStatus, EngagementType
from db.base import UTCDateTime

# One row per (workspace, address). The Lead table holds one lead per (workspace, lower(email)),
# so an address is one lead, stopped in every campaign of its workspace.
_TARGETS = """
    SELECT DISTINCT ON (x."workspaceId", lower(x.email))
           x."workspaceId", lower(x.email) AS email, x.email AS "asWritten", x.status, x.reason
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x("workspaceId" text, email text, status text, reason text)
"""
SUPPRESS = text(
    f"""
    INSERT INTO "Suppression" (id, "workspaceId", email, reason, "createdAt")
    SELECT replace(gen_random_uuid()::text, '-', ''), t."workspaceId", t."asWritten", t.reason,
           :now
    FROM ({_TARGETS}) t
    ON CONFLICT ("workspaceId", lower(email)) DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("now", type_=UTCDateTime))
STOP_ADDRESSES = text(
    f"""
    UPDATE "CampaignLead" cl
    SET status = t.status, "stopReason" = t.reason, "nextScheduledDate" = NULL,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM ({_TARGETS}) t, "Lead" l
    WHERE l."workspaceId" = t."workspaceId" AND lower(l.email) = t.email AND cl."leadId" = l.id
      AND cl.status IN ('active', 'paused')
    RETURNING cl.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))
# Completed enrolments too, since their last step's send may still be pending. A send claimed
# by a delivery run is cancelled as well: that run's guard, which needs 'scheduled', refuses it.
CANCEL_FOR_ADDRESSES = text(
    f"""
    UPDATE "EmailSend" s
    SET status = 'cancelled', "statusReason" = t.reason,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM ({_TARGETS}) t, "Lead" l
    WHERE l."workspaceId" = t."workspaceId" AND lower(l.email) = t.email AND s."leadId" = l.id
      AND s.status = 'scheduled'
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))
# Pending sends of stopped enrolments, with the enrolment's own stop reason.
CANCEL_FOR_ENROLMENTS = text(
    """
    UPDATE "EmailSend" s
    SET status = 'cancelled', "statusReason" = cl."stopReason",
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM "CampaignLead" cl
    WHERE cl.id = ANY(:ids) AND s."campaignId" = cl."campaignId" AND s."leadId" = cl."leadId"
      AND s.status = 'scheduled'
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

RECORD_EVENT = text(
    """
    INSERT INTO "EngagementEvent" (id, "emailSendId", type, "occurredAt", metadata, "createdAt",
                                   "dedupeKey", source)
    VALUES (:id, :send_id, :type, :occurred_at, CAST(:metadata AS jsonb), :now, :id, :source)
    ON CONFLICT DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("occurred_at", type_=UTCDateTime), bindparam("now", type_=UTCDateTime))


@dataclass(frozen=True)
class AddressStop:
    """Stop one address in its workspace: suppress it and stop its lead everywhere."""

    workspace_id: str
    email: str
    status: CampaignLeadStatus
    reason: str


@dataclass(frozen=True)
class StopResult:
    """What a stop changed: enrolments stopped and sends cancelled (ids), new suppressions."""

    stopped: list[str]
    cancelled: list[str]
    suppressed: int = 0


def stop_addresses(session: Session, stops: list[AddressStop], *, now: datetime) -> StopResult:
    """Suppress each address in its workspace, stop its lead everywhere, cancel pending sends."""
    if not stops:
        return StopResult(stopped=[], cancelled=[])
    rows = [
        {"workspaceId": s.workspace_id, "email": s.email, "status": s.status, "reason": s.reason}
        for s in stops
    ]
    params = {"rows": json.dumps(rows), "now": now}
    suppressed = len(session.execute(SUPPRESS, params).all())
    stopped = list(session.scalars(STOP_ADDRESSES, params))
    cancelled = list(session.scalars(CANCEL_FOR_ADDRESSES, params))
    return StopResult(stopped=stopped, cancelled=cancelled, suppressed=suppressed)


def stop_address(
    session: Session,
    *,
    workspace_id: str,
    email: str,
    status: CampaignLeadStatus,
    reason: str,
    now: datetime,
) -> StopResult:
    """Suppress one address in its workspace, stop its lead everywhere, cancel pending sends."""
    return stop_addresses(session, [AddressStop(workspace_id, email, status, reason)], now=now)


def cancel_for_enrolments(session: Session, enrolment_ids: list[str], *, now: datetime) -> int:
    """Cancel the pending sends of stopped enrolments; returns how many."""
    if not enrolment_ids:
        return 0
    return len(session.execute(CANCEL_FOR_ENROLMENTS, {"ids": enrolment_ids, "now": now}).all())


def record_event(
    session: Session,
    *,
    event_id: str,
    send_id: str,
    type: EngagementType,
    occurred_at: datetime,
    metadata: dict[str, Any] | None,
    now: datetime,
    source: str = "pipeline",
) -> bool:
    """Record an event once: its deterministic id is also its dedupe key (a repeat is False)."""
    params = {
        "id": event_id,
        "send_id": send_id,
        "type": type.value,
        "occurred_at": occurred_at,
        "metadata": json.dumps(metadata) if metadata is not None else None,
        "now": now,
        "source": source,
    }
    return session.execute(RECORD_EVENT, params).first() is not None


@dataclass(frozen=True)
class SendStop:
    """A send's recipient told us to stop (bounced at handover, unsubscribed through its link)."""

    send_id: str
    workspace_id: str
    email: str
    event: EngagementType
    status: CampaignLeadStatus
    reason: str
    metadata: dict[str, Any]


def stop_send_recipient(
    session: Session, stop: SendStop, *, now: datetime
) -> tuple[StopResult, bool]:
    """Record the send's event once and stop its address; the bool says the event is new.

    The one operation behind both the delivery bounce and the unsubscribe link, so each stops
    the same things and records the same event id (`bounce:<send>`, `unsubscribe:<send>`).
    """
    recorded = record_event(
        session,
        event_id=f"{stop.event.value}:{stop.send_id}",
        send_id=stop.send_id,
        type=stop.event,
        occurred_at=now,
        metadata=stop.metadata,
        now=now,
    )
    result = stop_address(
        session,
        workspace_id=stop.workspace_id,
        email=stop.email,
        status=stop.status,
        reason=stop.reason,
        now=now,
    )
    return result, recorded
