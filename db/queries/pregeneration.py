"""Writing drafts ahead: the upcoming leads, the batches and their requests, the drafts.

The requests of a batch are committed (`record_batch`) before anything is uploaded, under a
`customId` unique for the lead, step and content hash, so no run submits the same input twice;
the `GenerationBatch` id travels in the batch's metadata, so a batch whose OpenAI id was never
recorded is found again (`adopt_batch`) rather than submitted again.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import CursorResult, Text, bindparam, text
from sqlalchemy.orm import Session

from core.generation.due_lead import DueLead
from core.generation.pregenerate import RETIRED, BatchRequest, DraftAhead
from core.generation.prompt import PROMPT_VERSION
from core.ids import new_id
from core.statuses import (
    BatchRequestStatus,
    CampaignLeadStatus,
    CampaignStatus,
    GeneratedMessageStatus,
    GenerationBatchStatus,
    Pricing,
)
from db.base import UTCDateTime
from db.queries.claims import DUE_LEAD_DETAILS
from db.queries.generation import SETTLE_PREGENERATED
from db.queries.messages import insert_messages
from db.queries.rows import json_rows
from db.queries.threads import due_leads

# Active leads of active campaigns whose current step falls due in the window, not claimed,
# with no current message for the step and no request for it (but a stale one: the lead's
# data changed since, so its new input is worth a new request).
UPCOMING = text(
    f"""
    WITH upcoming AS (
        SELECT cl.*
        FROM "CampaignLead" cl
        JOIN "Campaign" c ON c.id = cl."campaignId"
        JOIN "SequenceStep" st
          ON st."campaignId" = cl."campaignId" AND st."stepOrder" = cl."currentStepOrder"
        WHERE cl.status = 'active' AND c.status = 'active'
          AND cl."nextScheduledDate" IS NOT NULL
          AND cl."nextScheduledDate" > :earliest AND cl."nextScheduledDate" <= :latest
          AND (cl."claimedUntil" IS NULL OR cl."claimedUntil" < :now)
          AND (CAST(:campaign_id AS text) IS NULL OR cl."campaignId" = :campaign_id)
          AND NOT EXISTS (
              SELECT 1 FROM "GeneratedMessage" gm
              WHERE gm."campaignId" = cl."campaignId" AND gm."leadId" = cl."leadId"
                AND gm."stepId" = st.id AND gm.status <> 'superseded')
          AND NOT EXISTS (
              SELECT 1 FROM "GenerationBatchRequest" r
              WHERE r."campaignLeadId" = cl.id AND r."stepId" = st.id AND r.status <> 'stale')
        ORDER BY cl."nextScheduledDate", cl.id
        LIMIT :limit
    )
    {DUE_LEAD_DETAILS.format(source="upcoming")}
    """
).bindparams(
    bindparam("earliest", type_=UTCDateTime),
    bindparam("latest", type_=UTCDateTime),
    bindparam("now", type_=UTCDateTime),
    bindparam("campaign_id", type_=Text),
)

# The leads of finished requests as they are now: gone (no longer active) or at another step,
# a request's answer is stale; else its content hash is computed again and compared.
LEADS_BY_ID = text(
    f"""
    WITH picked AS (
        SELECT cl.* FROM "CampaignLead" cl
        WHERE cl.id = ANY(CAST(:ids AS text[])) AND cl.status = 'active'
          AND cl."nextScheduledDate" IS NOT NULL
    )
    {DUE_LEAD_DETAILS.format(source="picked")}
    """
)

INSERT_BATCH = text(
    """
    INSERT INTO "GenerationBatch" (id, status, model, "requestCount", "createdAt")
    VALUES (:id, 'preparing', :model, 0, :now)
    """
).bindparams(bindparam("now", type_=UTCDateTime))

INSERT_REQUESTS = text(
    """
    INSERT INTO "GenerationBatchRequest" (id, "batchId", "customId", "campaignLeadId", "stepId",
        "inputHash", status, "createdAt")
    SELECT x.id, :batch, x."customId", x."campaignLeadId", x."stepId", x."inputHash", 'pending',
        :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        id text, "customId" text, "campaignLeadId" text, "stepId" text, "inputHash" text)
    ON CONFLICT ("customId") DO NOTHING
    RETURNING "customId"
    """
).bindparams(bindparam("now", type_=UTCDateTime))

COUNT_BATCH = text("""UPDATE "GenerationBatch" SET "requestCount" = :n WHERE id = :id""")
DROP_BATCH = text("""DELETE FROM "GenerationBatch" WHERE id = :id AND status = 'preparing'""")

SUBMITTED = text(
    """
    UPDATE "GenerationBatch"
    SET "openaiBatchId" = :openai_id, "inputFileId" = :file_id, status = 'submitted',
        "submittedAt" = :now
    WHERE id = :id AND status = 'preparing'
    """
).bindparams(bindparam("now", type_=UTCDateTime))

OPEN_BATCHES = text(
    """
    SELECT id, "openaiBatchId", status, "createdAt", model
    FROM "GenerationBatch"
    WHERE status IN ('preparing', 'submitted')
    ORDER BY "createdAt", id
    """
).columns(createdAt=UTCDateTime)

BATCH_REQUESTS = text(
    """
    SELECT "customId", "campaignLeadId", "stepId", "inputHash"
    FROM "GenerationBatchRequest"
    WHERE "batchId" = :id AND status = 'pending'
    """
)

INSERT_DRAFTS = insert_messages(
    keys='"customId" text',
    join="""JOIN "GenerationBatchRequest" r ON r."customId" = x."customId"
    JOIN "CampaignLead" cl ON cl.id = r."campaignLeadId\"""",
    owner='cl."campaignId", cl."leadId", r."stepId"',
    on_conflict="""ON CONFLICT ("campaignId", "leadId", "stepId") WHERE status <> 'superseded'
        DO NOTHING
    RETURNING id""",
)

SETTLE_REQUESTS = text(
    """
    UPDATE "GenerationBatchRequest" r
    SET status = x.status, error = x.error, "generatedMessageId" = x."messageId",
        "completedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "customId" text, status text, error text, "messageId" text)
    WHERE r."customId" = x."customId" AND r.status = 'pending'
    """
).bindparams(bindparam("now", type_=UTCDateTime))

FINISH_BATCH = text(
    """
    UPDATE "GenerationBatch"
    SET status = :status, "completedCount" = :completed, "failedCount" = :failed,
        error = :error, "completedAt" = :now
    WHERE id = :id AND status = 'submitted'
    """
).bindparams(bindparam("now", type_=UTCDateTime))


# Campaign and enrolment statuses a draft may still be used from: a pause is meant to be lifted
# (its leads resume where they were), so a paused lead's draft waits, and is retired only once
# it outlives its window. Any other status ends the lead's sequence.
_WAITING = ", ".join(f"'{s}'" for s in (CampaignStatus.active, CampaignStatus.paused))
_WAITING_LEAD = ", ".join(f"'{s}'" for s in (CampaignLeadStatus.active, CampaignLeadStatus.paused))

# The drafts no run will ever use, with why: their campaign ended, their lead stopped or is at
# another step (the claim only reads the draft of the lead's current step), or the draft outlived
# its window. A lead some run holds a live claim on is left alone, and the enrolments are locked
# (`FOR SHARE ... SKIP LOCKED`) until the retiring transaction ends: a generation claim
# (`FOR UPDATE SKIP LOCKED`) passes over such a lead until the draft is retired, then generates
# it, and one that claimed it first is passed over here; no draft is retired under a run that is
# about to adopt it.
RETIRABLE = text(
    f"""
    SELECT cl.id AS "campaignLeadId", gm."stepId", false AS adopted,
           CASE
               WHEN c.status NOT IN ({_WAITING}) THEN '{RETIRED}: campaign ' || c.status
               WHEN cl.status NOT IN ({_WAITING_LEAD}) THEN '{RETIRED}: enrolment ' || cl.status
               WHEN cl."currentStepOrder" IS DISTINCT FROM st."stepOrder" THEN
                   '{RETIRED}: the lead is at step '
                   || COALESCE(cl."currentStepOrder"::text, '(none)')
                   || ', the draft is for step ' || st."stepOrder"
               ELSE CAST(:outlived AS text)
           END AS "statusReason"
    FROM "GeneratedMessage" gm
    JOIN "CampaignLead" cl ON cl."campaignId" = gm."campaignId" AND cl."leadId" = gm."leadId"
    JOIN "Campaign" c ON c.id = gm."campaignId"
    JOIN "SequenceStep" st ON st.id = gm."stepId"
    WHERE gm.status = 'pregenerated'
      AND (cl."claimedUntil" IS NULL OR cl."claimedUntil" < :now)
      AND (c.status NOT IN ({_WAITING}) OR cl.status NOT IN ({_WAITING_LEAD})
           OR cl."currentStepOrder" IS DISTINCT FROM st."stepOrder"
           OR gm."createdAt" < :before)
    FOR SHARE OF cl SKIP LOCKED
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("before", type_=UTCDateTime))

# A draft whose enrolment was removed: no lead to claim, so nothing can race this.
RETIRE_UNENROLLED = text(
    f"""
    UPDATE "GeneratedMessage" gm
    SET status = 'superseded', "statusReason" = '{RETIRED}: the lead is no longer enrolled'
    WHERE gm.status = 'pregenerated'
      AND NOT EXISTS (
          SELECT 1 FROM "CampaignLead" cl
          WHERE cl."campaignId" = gm."campaignId" AND cl."leadId" = gm."leadId")
    """
)


@dataclass(frozen=True)
class OpenBatch:
    """A batch not finished yet: `preparing` (no OpenAI id recorded) or `submitted`."""

    id: str
    openaiBatchId: str | None
    status: GenerationBatchStatus
    createdAt: datetime
    model: str


@dataclass(frozen=True)
class PendingRequest:
    """A request of a batch whose answer has not been read yet."""

    customId: str
    campaignLeadId: str
    stepId: str
    inputHash: str


@dataclass(frozen=True)
class RequestOutcome:
    """What became of one request: a draft to store, or a status and why."""

    customId: str
    status: BatchRequestStatus
    error: str | None = None
    draft: DraftAhead | None = None
    inputHash: str | None = None


def upcoming_leads(
    session: Session,
    *,
    earliest: datetime,
    latest: datetime,
    now: datetime,
    limit: int,
    campaign_id: str | None,
) -> list[DueLead]:
    """Leads whose step falls due in the window and has neither a message nor a request yet."""
    params = {
        "earliest": earliest,
        "latest": latest,
        "now": now,
        "limit": limit,
        "campaign_id": campaign_id,
    }
    return due_leads(session, session.execute(UPCOMING, params).mappings().all())


def current_leads(session: Session, ids: Sequence[str]) -> dict[str, DueLead]:
    """The active leads among `ids`, with their current step and thread (by CampaignLead id)."""
    rows = session.execute(LEADS_BY_ID, {"ids": list(ids)}).mappings().all()
    return {lead.campaignLeadId: lead for lead in due_leads(session, rows)}


def record_batch(
    session: Session, *, batch_id: str, model: str, now: datetime, requests: list[BatchRequest]
) -> set[str]:
    """Record a batch and those of its requests never recorded before; returns their customIds.

    A batch left with no new request is not kept.
    """
    session.execute(INSERT_BATCH, {"id": batch_id, "model": model, "now": now})
    rows = [
        {
            "id": new_id(),
            "customId": r.customId,
            "campaignLeadId": r.campaignLeadId,
            "stepId": r.stepId,
            "inputHash": r.inputHash,
        }
        for r in requests
    ]
    params = {"rows": json_rows(rows), "batch": batch_id, "now": now}
    recorded = set(session.scalars(INSERT_REQUESTS, params).all())
    if recorded:
        session.execute(COUNT_BATCH, {"n": len(recorded), "id": batch_id})
    else:
        session.execute(DROP_BATCH, {"id": batch_id})
    return recorded


def mark_submitted(
    session: Session, *, batch_id: str, openai_id: str, file_id: str | None, now: datetime
) -> None:
    """The API has the batch: keep its id, so its answers are fetched by the next polls."""
    params = {"id": batch_id, "openai_id": openai_id, "file_id": file_id, "now": now}
    session.execute(SUBMITTED, params)


def drop_unsubmitted(session: Session, batch_id: str) -> None:
    """Forget a `preparing` batch the API never received; its leads are picked again."""
    session.execute(DROP_BATCH, {"id": batch_id})


def open_batches(session: Session) -> list[OpenBatch]:
    """Every batch not finished, oldest first."""
    return [
        OpenBatch(
            row.id, row.openaiBatchId, GenerationBatchStatus(row.status), row.createdAt, row.model
        )
        for row in session.execute(OPEN_BATCHES)
    ]


def pending_requests(session: Session, batch_id: str) -> list[PendingRequest]:
    """A batch's requests whose answers have not been read yet."""
    return [PendingRequest(*row) for row in session.execute(BATCH_REQUESTS, {"id": batch_id})]


def finish_batch(
    session: Session,
    *,
    batch_id: str,
    status: GenerationBatchStatus,
    completed: int,
    failed: int,
    error: str | None,
    outcomes: list[RequestOutcome],
    now: datetime,
) -> int:
    """Store the drafts as `pregenerated` messages, settle every request, close the batch.

    A draft for a step that has its message already (the lead came due first) is `unused`.
    Returns how many drafts were stored.
    """
    drafts = [o for o in outcomes if o.draft is not None]
    message_ids = {o.customId: new_id() for o in drafts}
    stored: set[str] = set()
    if drafts:
        rows = [
            {
                "customId": o.customId,
                "messageId": message_ids[o.customId],
                **asdict(o.draft),  # type: ignore[arg-type]  # drafts all have one
                "promptVersion": PROMPT_VERSION,
                "inputHash": o.inputHash,
                "latencyMs": 0,
                "fallbackReason": None,
                "status": GeneratedMessageStatus.pregenerated.value,
                "reviewReason": None,
                "pricing": Pricing.batch.value,
            }
            for o in drafts
        ]
        stored = set(session.scalars(INSERT_DRAFTS, {"rows": json_rows(rows), "now": now}).all())
    settled = []
    for o in outcomes:
        message = message_ids.get(o.customId)
        if message is not None:
            used = message in stored
            settles = BatchRequestStatus.drafted if used else BatchRequestStatus.unused
            settled.append(
                {
                    "customId": o.customId,
                    "status": settles.value,
                    "error": None if used else "the step had its message already",
                    "messageId": message if used else None,
                }
            )
        else:
            settled.append(
                {
                    "customId": o.customId,
                    "status": o.status.value,
                    "error": o.error,
                    "messageId": None,
                }
            )
    if settled:
        session.execute(SETTLE_REQUESTS, {"rows": json_rows(settled), "now": now})
    session.execute(
        FINISH_BATCH,
        {
            "id": batch_id,
            "status": status.value,
            "completed": completed,
            "failed": failed,
            "error": error,
            "now": now,
        },
    )
    return len(stored)


def retire_drafts(session: Session, *, now: datetime, before: datetime, outlived: str) -> int:
    """Supersede every `pregenerated` draft no run will use, each with why; returns how many.

    A draft stored before `before` has outlived its window (`outlived` says so). The drafts go
    through the statement that supersedes a draft when its lead comes due, so both leave the
    same row behind; call in a transaction of its own, which holds the enrolments' locks.
    """
    params = {"now": now, "before": before, "outlived": outlived}
    rows = [dict(row) for row in session.execute(RETIRABLE, params).mappings()]
    retired = 0
    if rows:
        settled = session.execute(SETTLE_PREGENERATED, {"rows": json_rows(rows)})
        assert isinstance(settled, CursorResult)
        retired += settled.rowcount
    unenrolled = session.execute(RETIRE_UNENROLLED)
    assert isinstance(unenrolled, CursorResult)
    return retired + unenrolled.rowcount
