"""Review before send: the sends awaiting review, what people decided, and the review queue.

A send awaiting review is `scheduled` with no `scheduledFor` (so no delivery claims it), its
message `pending_review`, and its lead waits at the step with no `nextScheduledDate` (so no
generation claims it). A person approves or rejects the message (the web app, or the `review`
commands here). Each generation run then claims the sends whose message was approved, with the
delivery claim's lease, so no other run and no step backfill touches them meanwhile, and writes
its verdicts fenced by that claim: a released send gets its slot and its lead moves on, in one
transaction; approved text the gate refused goes back to `pending_review`. Rejections are
recorded on the send and the lead by one idempotent statement.
"""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import Text, bindparam, text
from sqlalchemy.orm import Session

from core.generation.approval import ApprovedMessage, Release, SendBack
from core.generation.due_lead import DueLead
from core.generation.review import AWAITING_REVIEW, REJECTED_IN_REVIEW
from core.statuses import GeneratedMessageStatus
from db.base import UTCDateTime
from db.queries.claims import leased_claim
from db.queries.regeneration import release_sends
from db.queries.rows import json_rows
from db.queries.threads import due_leads

_APPROVED = """
    SELECT s.id
    FROM "EmailSend" s
    JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
    JOIN "Campaign" c ON c.id = s."campaignId"
    JOIN "CampaignLead" cl ON cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
    WHERE s.status = 'scheduled' AND s."scheduledFor" IS NULL
      AND gm.status = 'approved' AND c.status = 'active' AND cl.status = 'active'
      AND (CAST(:campaign_id AS text) IS NULL OR s."campaignId" = :campaign_id)
      AND (s."claimedUntil" IS NULL OR s."claimedUntil" < :now)
    ORDER BY s."createdAt", s.id
    LIMIT :limit
"""
# The approved text, and the lead at the send's step as generation sees it (the columns of
# `core.generation.due_lead.DueLead`), the next step's delay included for its progression.
_APPROVED_DETAILS = """
    SELECT s.id AS "sendId", gm.id AS "messageId", gm.subject, gm.body,
           cl.id AS "campaignLeadId", s."campaignId", s."leadId", c."workspaceId",
           st."stepOrder", COALESCE(cl."nextScheduledDate", s."createdAt") AS "nextScheduledDate",
           cl.attempts, l.email, l."firstName", l."lastName", l."companyName", l.title,
           l.industry, l."companySize", l.website, l.timezone, l."customFields",
           c.goal, c."sendingRules",
           st.id AS "stepId", st."subjectTemplate", st."bodyTemplate", st."aiInstructions",
           n."delayDays" AS "nextStepDelayDays"
    FROM {source} s
    JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
    JOIN "Campaign" c ON c.id = s."campaignId"
    JOIN "Lead" l ON l.id = s."leadId"
    JOIN "SequenceStep" st ON st.id = s."stepId"
    JOIN "CampaignLead" cl ON cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
    LEFT JOIN "SequenceStep" n
           ON n."campaignId" = s."campaignId" AND n."stepOrder" = st."stepOrder" + 1
    ORDER BY s."createdAt", s.id
"""
# Its dry-run twin is not needed: a dry run releases nothing.
CLAIM_APPROVED = leased_claim(
    "EmailSend",
    "s",
    _APPROVED,
    _APPROVED_DETAILS,
    bindparam("now", type_=UTCDateTime),
    bindparam("campaign_id", type_=Text),
    nextScheduledDate=UTCDateTime,
)[0]

# The sends this claim may still write, locked in id order: still awaiting review, still ours.
FENCE = text(
    """
    SELECT id FROM "EmailSend"
    WHERE id = ANY(CAST(:ids AS text[])) AND "claimToken" = :token
      AND status = 'scheduled' AND "scheduledFor" IS NULL
    ORDER BY id
    FOR UPDATE
    """
)

_VERDICTS = """
    jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "sendId" text, "messageId" text, "stepOrder" int, "seenSubject" text, "seenBody" text,
        subject text, body text, reason text, "scheduledFor" timestamptz, "nextStepOrder" int,
        "nextScheduledDate" timestamptz, completed boolean)
"""
# Only the text that was checked: an edit saved since the claim read it stays approved, and the
# next run checks it.
_SAME_TEXT = """
    gm.id = x."messageId" AND gm.status = 'approved'
    AND gm.subject = x."seenSubject" AND gm.body = x."seenBody"
    AND x."sendId" = ANY(CAST(:ids AS text[]))
"""
KEEP_CHECKED_TEXT = text(
    f"""
    UPDATE "GeneratedMessage" gm
    SET subject = x.subject, body = x.body
    FROM {_VERDICTS}
    WHERE {_SAME_TEXT}
    RETURNING x."sendId"
    """
)
RETURN_TO_REVIEW = text(
    f"""
    UPDATE "GeneratedMessage" gm
    SET status = 'pending_review', "reviewReason" = x.reason
    FROM {_VERDICTS}
    WHERE {_SAME_TEXT}
    RETURNING x."sendId"
    """
)
GIVE_SLOT = text(
    f"""
    UPDATE "EmailSend" s
    SET "scheduledFor" = (x."scheduledFor" AT TIME ZONE 'UTC'), "statusReason" = NULL,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM {_VERDICTS}
    WHERE s.id = x."sendId" AND s.id = ANY(CAST(:ids AS text[])) AND s."claimToken" = :token
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))
# The lead moves on as generation would have moved it, if it still waits at this step (a pause
# since does not strand it: a paused lead keeps its status and gets its next date).
PROGRESS_WAITING = text(
    f"""
    UPDATE "CampaignLead" cl
    SET "currentStepOrder" = x."nextStepOrder",
        "nextScheduledDate" = CASE WHEN x.completed THEN NULL
                                   ELSE (x."nextScheduledDate" AT TIME ZONE 'UTC') END,
        status = CASE WHEN x.completed THEN 'completed' ELSE cl.status END,
        attempts = 0, "lastError" = NULL, "updatedAt" = :now
    FROM {_VERDICTS}, "EmailSend" s
    WHERE s.id = x."sendId" AND s.id = ANY(CAST(:ids AS text[]))
      AND cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
      AND cl."currentStepOrder" = x."stepOrder" AND cl."nextScheduledDate" IS NULL
      AND cl.status IN ('active', 'paused')
    """
).bindparams(bindparam("now", type_=UTCDateTime))
SAY_WHY_SENT_BACK = text(
    f"""
    WITH sends AS (
        UPDATE "EmailSend" s
        SET "statusReason" = :awaiting || ': ' || x.reason,
            "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
        FROM {_VERDICTS}
        WHERE s.id = x."sendId" AND s.id = ANY(CAST(:ids AS text[])) AND s."claimToken" = :token
        RETURNING s.id, s."campaignId", s."leadId", x."stepOrder", x.reason
    )
    UPDATE "CampaignLead" cl
    SET "lastError" = sends.reason, "updatedAt" = :now
    FROM sends
    WHERE cl."campaignId" = sends."campaignId" AND cl."leadId" = sends."leadId"
      AND cl."currentStepOrder" = sends."stepOrder" AND cl."nextScheduledDate" IS NULL
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("awaiting", value=AWAITING_REVIEW))

# Rejections the web app (or `review reject`) made, written once onto the send and the waiting
# lead as `rejected in review: <the reviewer's note>`; unchanged ones are not written again.
RECORD_REJECTIONS = text(
    """
    WITH awaiting AS (
        SELECT s.id, s."campaignId", s."leadId", st."stepOrder", s."statusReason",
               :rejected || COALESCE(': ' || NULLIF(btrim(gm."reviewNote"), ''), '') AS reason
        FROM "EmailSend" s
        JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
        JOIN "SequenceStep" st ON st.id = s."stepId"
        WHERE s.status = 'scheduled' AND s."scheduledFor" IS NULL AND gm.status = 'rejected'
          AND (CAST(:campaign_id AS text) IS NULL OR s."campaignId" = :campaign_id)
          AND (s."claimedUntil" IS NULL OR s."claimedUntil" < :now)
        FOR UPDATE OF s SKIP LOCKED
    ), news AS (
        SELECT * FROM awaiting WHERE "statusReason" IS DISTINCT FROM reason
    ), leads AS (
        UPDATE "CampaignLead" cl
        SET "lastError" = news.reason, "updatedAt" = :now
        FROM news
        WHERE cl."campaignId" = news."campaignId" AND cl."leadId" = news."leadId"
          AND cl."currentStepOrder" = news."stepOrder" AND cl."nextScheduledDate" IS NULL
    ), sends AS (
        UPDATE "EmailSend" s
        SET "statusReason" = news.reason, "updatedAt" = :now
        FROM news
        WHERE s.id = news.id
        RETURNING s."campaignId"
    )
    SELECT "campaignId", count(*) FROM sends GROUP BY "campaignId"
    """
).bindparams(
    bindparam("now", type_=UTCDateTime),
    bindparam("campaign_id", type_=Text),
    bindparam("rejected", value=REJECTED_IN_REVIEW),
)


@dataclass(frozen=True)
class ApprovedClaim:
    """Sends whose message was approved, claimed by this token."""

    token: str
    messages: list[ApprovedMessage]


def claim_approved(
    session: Session,
    *,
    now: datetime,
    limit: int,
    worker: str,
    lease: timedelta,
    campaign_id: str | None,
) -> ApprovedClaim:
    """Claim up to limit sends awaiting review whose message a person approved, oldest first.

    Only of active campaigns and active leads, as generation claims only those.
    """
    token = uuid4().hex
    params = {
        "now": now,
        "limit": limit,
        "campaign_id": campaign_id,
        "worker": worker,
        "token": token,
        "lease_until": now + lease,
    }
    rows = session.execute(CLAIM_APPROVED, params).mappings().all()
    # The leads with their threads, as a claim loads them, so the gate sees what generation saw.
    messages = [
        ApprovedMessage(
            sendId=row["sendId"],
            messageId=row["messageId"],
            subject=row["subject"],
            body=row["body"],
            lead=lead,
        )
        for row, lead in zip(rows, due_leads(session, rows), strict=True)
    ]
    return ApprovedClaim(token=token, messages=messages)


@dataclass(frozen=True)
class WrittenVerdicts:
    """The send ids given their slot, and those whose message went back to review."""

    released: set[str]
    sent_back: set[str]


def _verdict_rows(verdicts: list[Release] | list[SendBack]) -> str:
    return json_rows([asdict(v) for v in verdicts])


def write_verdicts(
    session: Session,
    *,
    token: str,
    now: datetime,
    releases: list[Release],
    send_backs: list[SendBack],
    claimed: list[str],
) -> WrittenVerdicts:
    """Release or send back each claimed send that is still ours and still awaiting review, if
    its message still says what was checked; then drop this claim from the rest."""
    fenced = list(session.scalars(FENCE, {"ids": claimed, "token": token}))
    released: set[str] = set()
    sent_back: set[str] = set()
    if releases and fenced:
        rows = _verdict_rows(releases)
        kept = list(session.scalars(KEEP_CHECKED_TEXT, {"rows": rows, "ids": fenced}))
        params = {"rows": rows, "ids": kept, "token": token, "now": now}
        released = set(session.scalars(GIVE_SLOT, params))
        session.execute(PROGRESS_WAITING, params | {"ids": sorted(released)})
    if send_backs and fenced:
        rows = _verdict_rows(send_backs)
        returned = list(session.scalars(RETURN_TO_REVIEW, {"rows": rows, "ids": fenced}))
        session.execute(
            SAY_WHY_SENT_BACK, {"rows": rows, "ids": returned, "token": token, "now": now}
        )
        sent_back = set(returned)
    release_sends(session, token=token, send_ids=[i for i in claimed if i not in released])
    return WrittenVerdicts(released=released, sent_back=sent_back)


def record_rejections(
    session: Session, *, now: datetime, campaign_id: str | None
) -> dict[str, int]:
    """Write each new rejection onto its send and waiting lead; how many, per campaign."""
    params = {"now": now, "campaign_id": campaign_id}
    return {campaign: n for campaign, n in session.execute(RECORD_REJECTIONS, params)}


# The review commands ----------------------------------------------------------------------

_MESSAGE = """
    SELECT gm.id, gm."campaignId", c.name AS "campaignName", st."stepOrder", l.email,
           l."firstName", l."lastName", gm.status, gm.subject, gm.body, gm."createdAt",
           gm."reviewReason", gm."reviewNote", gm."reviewedAt", gm."fallbackReason", gm.model,
           s.status AS "sendStatus", s."statusReason" AS "sendReason",
           s."scheduledFor"
    FROM "GeneratedMessage" gm
    JOIN "Campaign" c ON c.id = gm."campaignId"
    JOIN "SequenceStep" st ON st.id = gm."stepId"
    JOIN "Lead" l ON l.id = gm."leadId"
    LEFT JOIN "EmailSend" s ON s."generatedMessageId" = gm.id
"""
_MESSAGE_TIMES = {"createdAt": UTCDateTime, "reviewedAt": UTCDateTime, "scheduledFor": UTCDateTime}
PENDING = (
    text(
        f"""
    {_MESSAGE}
    WHERE gm.status = 'pending_review'
      AND (CAST(:campaign_id AS text) IS NULL OR gm."campaignId" = :campaign_id)
    ORDER BY gm."createdAt", gm.id
    LIMIT :limit
    """
    )
    .bindparams(bindparam("campaign_id", type_=Text))
    .columns(**_MESSAGE_TIMES)
)
ONE_MESSAGE = text(f"{_MESSAGE} WHERE gm.id = :id").columns(**_MESSAGE_TIMES)

# A person's decision, taken only from the statuses given; answers each found id's status
# before, so the command can say what became of every id it was given.
DECIDE = text(
    """
    WITH found AS (
        SELECT id, status FROM "GeneratedMessage"
        WHERE id = ANY(CAST(:ids AS text[]))
        ORDER BY id
        FOR UPDATE
    ), decided AS (
        UPDATE "GeneratedMessage" gm
        SET status = :status, "reviewNote" = :note, "reviewedAt" = :now
        FROM found
        WHERE gm.id = found.id AND found.status = ANY(CAST(:from_statuses AS text[]))
    )
    SELECT id, status FROM found
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("note", type_=Text))
STEP_PENDING = text(
    """
    SELECT p.id
    FROM "GeneratedMessage" one
    JOIN "GeneratedMessage" p ON p."campaignId" = one."campaignId" AND p."stepId" = one."stepId"
    WHERE one.id = :id AND p.status = 'pending_review'
    ORDER BY p."createdAt", p.id
    """
)


@dataclass(frozen=True)
class ReviewMessage:
    """A message as the review commands show it (to an operator: the address is shown)."""

    id: str
    campaignId: str
    campaignName: str
    stepOrder: int
    email: str
    firstName: str | None
    lastName: str | None
    status: str
    subject: str
    body: str
    createdAt: datetime
    reviewReason: str | None
    reviewNote: str | None
    reviewedAt: datetime | None
    fallbackReason: str | None
    model: str | None
    sendStatus: str | None
    sendReason: str | None
    scheduledFor: datetime | None


def _message(row: Any) -> ReviewMessage:
    return ReviewMessage(**row)


def list_pending(session: Session, *, campaign_id: str | None, limit: int) -> list[ReviewMessage]:
    """Messages pending review, oldest first."""
    rows = session.execute(PENDING, {"campaign_id": campaign_id, "limit": limit}).mappings()
    return [_message(row) for row in rows]


def get_message(session: Session, message_id: str) -> ReviewMessage | None:
    """One message with its send, whatever its status."""
    row = session.execute(ONE_MESSAGE, {"id": message_id}).mappings().first()
    return _message(row) if row else None


def decide(
    session: Session,
    ids: list[str],
    *,
    status: GeneratedMessageStatus,
    from_statuses: tuple[GeneratedMessageStatus, ...],
    note: str | None,
    now: datetime,
) -> dict[str, GeneratedMessageStatus]:
    """Set `status` (with the note) on the messages now in one of `from_statuses`; returns
    each found id's status before, so ids in another status were left as they were."""
    params = {
        "ids": ids,
        "status": status.value,
        "from_statuses": [s.value for s in from_statuses],
        "note": note,
        "now": now,
    }
    return {i: GeneratedMessageStatus(s) for i, s in session.execute(DECIDE, params)}


def step_pending(session: Session, message_id: str) -> list[str]:
    """Every message pending review in the same campaign step as this one (itself included)."""
    return list(session.scalars(STEP_PENDING, {"id": message_id}))


# The launch sample -------------------------------------------------------------------------

# Enrolled leads of the campaign as generation would see them at the given step, active ones
# first, oldest enrolment first: the sample is a dry run, so nothing is claimed or written.
SAMPLE_LEADS = (
    text(
        """
    SELECT cl.id AS "campaignLeadId", cl."campaignId", cl."leadId", c."workspaceId",
           st."stepOrder", COALESCE(cl."nextScheduledDate", :now) AS "nextScheduledDate",
           cl.attempts, l.email, l."firstName", l."lastName", l."companyName", l.title,
           l.industry, l."companySize", l.website, l.timezone, l."customFields",
           c.goal, c."sendingRules",
           st.id AS "stepId", st."subjectTemplate", st."bodyTemplate", st."aiInstructions",
           n."delayDays" AS "nextStepDelayDays"
    FROM "CampaignLead" cl
    JOIN "Campaign" c ON c.id = cl."campaignId"
    JOIN "Lead" l ON l.id = cl."leadId"
    JOIN "SequenceStep" st ON st."campaignId" = cl."campaignId" AND st."stepOrder" = :step_order
    LEFT JOIN "SequenceStep" n
           ON n."campaignId" = cl."campaignId" AND n."stepOrder" = st."stepOrder" + 1
    WHERE cl."campaignId" = :campaign_id
    ORDER BY cl.status <> 'active', cl."createdAt", cl.id
    LIMIT :limit
    """
    )
    .bindparams(bindparam("now", type_=UTCDateTime))
    .columns(nextScheduledDate=UTCDateTime)
)


def sample_leads(
    session: Session, *, campaign_id: str, step_order: int, limit: int, now: datetime
) -> list[DueLead]:
    """Up to limit enrolled leads of the campaign, at the given step, for a sample of drafts."""
    params = {"campaign_id": campaign_id, "step_order": step_order, "limit": limit, "now": now}
    # With their threads, so a follow-up's sample is written knowing what was sent before.
    return due_leads(session, session.execute(SAMPLE_LEADS, params).mappings().all())
