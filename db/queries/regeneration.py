"""Step backfill queries: page through a step's sends, claim the scheduled ones, replace messages.

The claim is the delivery claim's lease (`claimedBy`, `claimedUntil`, `claimToken` on
`EmailSend`, built by `leased_claim`): while a backfill holds a send, no delivery run claims it
(the lease) or hands it over (the handover needs the delivery run's own token), and no other
backfill takes it. A send a delivery run already holds is skipped, never taken.

A run walks the step's sends in pages by id, so each send is looked at once per run even though
a written batch releases its claims at once; each page's sends that are not `scheduled`, or
are held by another run, are counted and left alone.

The write is one transaction per batch: the sends still claimed by this token and still
`scheduled` are locked first, then their current message is superseded, the new one inserted,
and the send repointed and released. A send handed over or cancelled meanwhile is not touched.
"""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.generation.due_lead import DueLead
from core.generation.regeneration import MessageRewrite, StepSend, StepTarget
from core.generation.review import AWAITING_REVIEW
from core.statuses import CampaignStatus, EmailSendStatus
from db.base import UTCDateTime
from db.queries.claims import leased_claim
from db.queries.messages import insert_messages
from db.queries.rows import json_rows
from db.queries.threads import due_leads

FIND_STEP = text(
    """
    SELECT c.id, c.status,
           (SELECT s.id FROM "SequenceStep" s
            WHERE s."campaignId" = c.id AND s."stepOrder" = :step_order) AS step_id,
           ARRAY(SELECT s."stepOrder" FROM "SequenceStep" s
                 WHERE s."campaignId" = c.id ORDER BY s."stepOrder") AS step_orders
    FROM "Campaign" c
    WHERE c.id = :campaign_id
    """
)

# Every send of the step, in id order from a cursor: the ids never change, so the walk is stable.
PAGE = text(
    """
    SELECT s.id, s.status
    FROM "EmailSend" s
    WHERE s."campaignId" = :campaign_id AND s."stepId" = :step_id AND s.id > :after
    ORDER BY s.id
    LIMIT :limit
    """
)

_DUE = """
    SELECT s.id
    FROM "EmailSend" s
    WHERE s.id = ANY(CAST(:page AS text[]))
      AND s.status = 'scheduled'
      AND (s."claimedUntil" IS NULL OR s."claimedUntil" < :now)
    ORDER BY s.id
"""
# The lead as generation sees it (the columns of `core.generation.due_lead.DueLead`), plus the
# send's current message; the send's variant pins the lead's, so a backfill never moves it. A
# send whose enrolment was deleted is still regenerated (its lead and step are what the message
# needs); it gets an empty campaignLeadId, which only labels outcomes.
_DETAILS = """
    SELECT s.id AS "sendId", s."scheduledFor",
           s."generatedMessageId" AS "currentMessageId",
           gm."inputHash" AS "currentInputHash", gm."fallbackReason" AS "currentFallbackReason",
           gm.status AS "currentMessageStatus",
           COALESCE(cl.id, '') AS "campaignLeadId", s."campaignId", s."leadId", c."workspaceId",
           st."stepOrder", COALESCE(s."scheduledFor", s."createdAt") AS "nextScheduledDate",
           COALESCE(cl.attempts, 0) AS attempts,
           l.email, l."firstName", l."lastName", l."companyName", l.title, l.industry,
           l."companySize", l.website, l.timezone, l."customFields",
           c.goal, c."sendingRules",
           st.id AS "stepId", st."subjectTemplate", st."bodyTemplate", st."aiInstructions",
           s."variantKey"
    FROM {source} s
    JOIN "Campaign" c ON c.id = s."campaignId"
    JOIN "Lead" l ON l.id = s."leadId"
    JOIN "SequenceStep" st ON st.id = s."stepId"
    LEFT JOIN "CampaignLead" cl ON cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
    LEFT JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
    ORDER BY s.id
"""
CLAIM_STEP_SENDS, PREVIEW_STEP_SENDS = leased_claim(
    "EmailSend",
    "s",
    _DUE,
    _DETAILS,
    bindparam("now", type_=UTCDateTime),
    scheduledFor=UTCDateTime,
    nextScheduledDate=UTCDateTime,
)

# Locks the sends this claim may still write, in id order (no deadlock with another writer).
FENCE = text(
    """
    SELECT id FROM "EmailSend"
    WHERE id = ANY(CAST(:ids AS text[])) AND "claimToken" = :token AND status = 'scheduled'
    ORDER BY id
    FOR UPDATE
    """
)

# The step's current message of each send (at most one: the partial unique index) becomes
# history before its successor is inserted.
SUPERSEDE = text(
    """
    UPDATE "GeneratedMessage" gm
    SET status = 'superseded'
    FROM "EmailSend" s
    WHERE s.id = ANY(CAST(:ids AS text[]))
      AND gm."campaignId" = s."campaignId" AND gm."leadId" = s."leadId"
      AND gm."stepId" = s."stepId" AND gm.status <> 'superseded'
    """
)

INSERT_MESSAGES = insert_messages(
    keys='"sendId" text',
    join='JOIN "EmailSend" s ON s.id = x."sendId"',
    owner='s."campaignId", s."leadId", s."stepId"',
)

# The same slot: scheduledFor, mailbox and attempts are left as they are, and so is statusReason
# unless the new message awaits review, which it then says.
REPOINT = text(
    """
    UPDATE "EmailSend" s
    SET "generatedMessageId" = x."messageId", "variantKey" = x."variantKey",
        "statusReason" = COALESCE(:awaiting || ': ' || x."reviewReason", s."statusReason"),
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x("sendId" text, "messageId" text, "reviewReason" text, "variantKey" text)
    WHERE s.id = x."sendId" AND s.id = ANY(CAST(:ids AS text[]))
      AND s."claimToken" = :token AND s.status = 'scheduled'
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("awaiting", value=AWAITING_REVIEW))

RELEASE = text(
    """
    UPDATE "EmailSend"
    SET "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL
    WHERE id = ANY(CAST(:ids AS text[])) AND "claimToken" = :token
    RETURNING id
    """
)


@dataclass(frozen=True)
class StepPage:
    """One page of a step's sends: those claimed (or previewed), and how many were passed by."""

    token: str | None
    sends: list[StepSend]
    cursor: str | None  # the page's last send id; None once the step has no sends left
    not_scheduled: int  # sending, sent, unknown, failed or cancelled
    busy: int  # scheduled, but claimed by another run


def find_step(session: Session, *, campaign_id: str, step_order: int) -> StepTarget:
    """The campaign and its step with this stepOrder, as far as they exist."""
    row = session.execute(FIND_STEP, {"campaign_id": campaign_id, "step_order": step_order}).first()
    if row is None:
        return StepTarget(campaign_id=campaign_id, step_order=step_order)
    return StepTarget(
        campaign_id=campaign_id,
        step_order=step_order,
        campaign_found=True,
        campaign_status=CampaignStatus(row.status),
        step_id=row.step_id,
        step_orders=list(row.step_orders),
    )


def _step_send(row: Any, lead: DueLead) -> StepSend:
    return StepSend(
        sendId=row["sendId"],
        scheduledFor=row["scheduledFor"],
        currentMessageId=row["currentMessageId"],
        currentInputHash=row["currentInputHash"],
        currentFallbackReason=row["currentFallbackReason"],
        currentMessageStatus=row["currentMessageStatus"],
        lead=lead,
    )


def step_page(
    session: Session,
    *,
    campaign_id: str,
    step_id: str,
    after: str,
    limit: int,
    now: datetime,
    worker: str | None,
    lease: timedelta | None,
) -> StepPage:
    """Claim the scheduled, unclaimed sends of the next page; preview them when worker is None.

    A preview locks and stamps nothing (dry runs).
    """
    page = session.execute(
        PAGE, {"campaign_id": campaign_id, "step_id": step_id, "after": after, "limit": limit}
    ).all()
    if not page:
        return StepPage(token=None, sends=[], cursor=None, not_scheduled=0, busy=0)
    scheduled = [send_id for send_id, status in page if status == EmailSendStatus.scheduled]
    params: dict[str, Any] = {"page": scheduled, "now": now}
    token = None
    if worker is None:
        rows = session.execute(PREVIEW_STEP_SENDS, params).mappings().all()
    else:
        assert lease is not None
        token = uuid4().hex
        params |= {"worker": worker, "token": token, "lease_until": now + lease}
        rows = session.execute(CLAIM_STEP_SENDS, params).mappings().all()
    # The leads with their threads, as a claim loads them: the step is written anew knowing
    # what the earlier steps said.
    leads = due_leads(session, rows)
    sends = [_step_send(row, lead) for row, lead in zip(rows, leads, strict=True)]
    return StepPage(
        token=token,
        sends=sends,
        cursor=page[-1][0],
        not_scheduled=len(page) - len(scheduled),
        busy=len(scheduled) - len(sends),
    )


def replace_messages(
    session: Session, *, token: str, now: datetime, rewrites: list[MessageRewrite]
) -> set[str]:
    """Give each send its new message, if this claim still holds it and it is still scheduled.

    Returns the send ids repointed (and released); the others are left exactly as they were.
    """
    if not rewrites:
        return set()
    ids = [r.sendId for r in rewrites]
    fenced = set(session.scalars(FENCE, {"ids": ids, "token": token}))
    rows = [asdict(r) for r in rewrites if r.sendId in fenced]
    if not rows:
        return set()
    fenced_ids = [row["sendId"] for row in rows]
    session.execute(SUPERSEDE, {"ids": fenced_ids})
    session.execute(INSERT_MESSAGES, {"rows": json_rows(rows), "now": now})
    pointers = [
        {key: row[key] for key in ("sendId", "messageId", "reviewReason", "variantKey")}
        for row in rows
    ]
    params = {"rows": json_rows(pointers), "ids": fenced_ids, "token": token, "now": now}
    return set(session.scalars(REPOINT, params))


def release_sends(session: Session, *, token: str, send_ids: list[str]) -> set[str]:
    """Drop this claim from sends it did not write (held or unchanged); others are untouched."""
    if not send_ids:
        return set()
    return set(session.scalars(RELEASE, {"ids": send_ids, "token": token}))
