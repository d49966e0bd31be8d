"""Writing a generated batch: progression, GeneratedMessage and EmailSend, fenced by the claim.

Each statement is set-based over a JSON array of rows, so a batch of 500 costs three round
trips, not 1,500. The progression update runs first and only touches rows whose `claimToken`
is still this claim's; the inserts then follow only for those rows, so a zombie worker whose
lease was taken over writes nothing. The unique constraints make a repeated write a no-op.
"""

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.generation.generate import Hold, MessageWrite
from core.generation.pregenerate import SUPERSEDED_WHEN_DUE
from core.generation.review import AWAITING_REVIEW
from db.base import UTCDateTime
from db.queries.messages import insert_messages
from db.queries.rows import json_rows

PROGRESS = text(
    """
    UPDATE "CampaignLead" cl
    SET "currentStepOrder" = x."nextStepOrder",
        "nextScheduledDate" = CASE WHEN x.completed THEN NULL
                                   ELSE (x."nextScheduledDate" AT TIME ZONE 'UTC') END,
        status = CASE WHEN x.completed THEN 'completed' ELSE cl.status END,
        attempts = 0, "lastError" = NULL,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL,
        "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "campaignLeadId" text, "stepOrder" int, "nextStepOrder" int,
        "nextScheduledDate" timestamptz, completed boolean)
    WHERE cl.id = x."campaignLeadId"
      AND cl."claimToken" = :token
      AND cl."currentStepOrder" = x."stepOrder"
      AND cl.status = 'active'
    RETURNING cl.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))

INSERT_MESSAGES = insert_messages(
    keys='"campaignLeadId" text, "stepId" text',
    join='JOIN "CampaignLead" cl ON cl.id = x."campaignLeadId"',
    owner='cl."campaignId", cl."leadId", x."stepId"',
    on_conflict="""ON CONFLICT ("campaignId", "leadId", "stepId") WHERE status <> 'superseded'
        DO NOTHING""",
)

# A step's draft written ahead (`pregenerated`) becomes the lead's message when the outcome used
# it (`adopted`: same content hash, gate passed), with the status this write gives it; otherwise
# it is `superseded`, before the new message is inserted in its place, and says why (a row's own
# `statusReason`: pregenerate-upcoming-steps retires drafts through this statement too). Either
# way no pregenerated draft is left behind for a lead that was written, and the step has one
# current message.
SETTLE_PREGENERATED = text(
    """
    UPDATE "GeneratedMessage" gm
    SET status = CASE WHEN x.adopted THEN x.status ELSE 'superseded' END,
        "reviewReason" = CASE WHEN x.adopted THEN x."reviewReason" ELSE gm."reviewReason" END,
        "statusReason" = CASE WHEN x.adopted THEN NULL
                              ELSE COALESCE(x."statusReason", :superseded) END
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "campaignLeadId" text, "stepId" text, adopted boolean, status text, "reviewReason" text,
        "statusReason" text)
    JOIN "CampaignLead" cl ON cl.id = x."campaignLeadId"
    WHERE gm."campaignId" = cl."campaignId" AND gm."leadId" = cl."leadId"
      AND gm."stepId" = x."stepId" AND gm.status = 'pregenerated'
    """
).bindparams(bindparam("superseded", value=SUPERSEDED_WHEN_DUE))

# The send takes the current message of its step (just inserted, or left by an earlier write)
# and the address from the Lead row, so addresses never travel through task results. A message
# awaiting review gets a send without a slot, which no delivery claims, and says so. The send
# records its message's step variant.
INSERT_SENDS = text(
    """
    INSERT INTO "EmailSend" (id, "campaignId", "leadId", "stepId", "generatedMessageId",
        "toEmail", status, "scheduledFor", "statusReason", "variantKey", "createdAt", "updatedAt")
    SELECT x."sendId", cl."campaignId", cl."leadId", x."stepId", gm.id, l.email, 'scheduled',
        (x."scheduledFor" AT TIME ZONE 'UTC'), :awaiting || ': ' || x."reviewReason",
        gm."variantKey", :now, :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "campaignLeadId" text, "sendId" text, "stepId" text, "scheduledFor" timestamptz,
        "reviewReason" text)
    JOIN "CampaignLead" cl ON cl.id = x."campaignLeadId"
    JOIN "Lead" l ON l.id = cl."leadId"
    JOIN "GeneratedMessage" gm ON gm."campaignId" = cl."campaignId" AND gm."leadId" = cl."leadId"
        AND gm."stepId" = x."stepId" AND gm.status <> 'superseded'
    ON CONFLICT ("campaignId", "leadId", "stepId") DO NOTHING
    RETURNING "EmailSend".id
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("awaiting", value=AWAITING_REVIEW))

# The current messages of each step, counted up to its reviewCount (all `review: first` needs).
# The current-message index has the campaign first, so this reads one campaign's rows at most.
COUNT_STEP_MESSAGES = text(
    """
    SELECT x."stepId",
           (SELECT count(*) FROM (
                SELECT 1 FROM "GeneratedMessage" gm
                WHERE gm."campaignId" = st."campaignId" AND gm."stepId" = st.id
                  AND gm.status NOT IN ('superseded', 'pregenerated')
                LIMIT x.cap) counted) AS n
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x("stepId" text, cap int)
    JOIN "SequenceStep" st ON st.id = x."stepId"
    """
)

HOLD = text(
    """
    UPDATE "CampaignLead" cl
    SET attempts = cl.attempts + 1,
        "lastError" = x.reason,
        "nextScheduledDate" = (x.until AT TIME ZONE 'UTC'),
        status = CASE WHEN x."giveUp" THEN 'failed' ELSE cl.status END,
        "stopReason" = CASE WHEN x."giveUp" THEN 'generation_failed' ELSE cl."stopReason" END,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL,
        "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "campaignLeadId" text, reason text, until timestamptz, "giveUp" boolean)
    WHERE cl.id = x."campaignLeadId" AND cl."claimToken" = :token AND cl.status = 'active'
    RETURNING cl.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))


def record_messages(
    session: Session, *, token: str, now: datetime, writes: list[MessageWrite]
) -> set[str]:
    """Progress the leads this claim still holds and write their message and send.

    Returns the CampaignLead ids written; the others were taken over by another worker.
    """
    if not writes:
        return set()
    rows = [asdict(write) for write in writes]
    written = set(
        session.scalars(PROGRESS, {"rows": json_rows(rows), "token": token, "now": now}).all()
    )
    fenced = [row for row in rows if row["campaignLeadId"] in written]
    if fenced:
        session.execute(SETTLE_PREGENERATED, {"rows": json_rows(fenced)})
        session.execute(INSERT_MESSAGES, {"rows": json_rows(fenced), "now": now})
        session.execute(INSERT_SENDS, {"rows": json_rows(fenced), "now": now})
    return written


def count_step_messages(session: Session, caps: dict[str, int]) -> dict[str, int]:
    """How many current messages each step has, counted up to its cap (step id -> count)."""
    if not caps:
        return {}
    rows = json_rows([{"stepId": step, "cap": cap} for step, cap in caps.items()])
    return {step: n for step, n in session.execute(COUNT_STEP_MESSAGES, {"rows": rows})}


def hold_leads(session: Session, *, token: str, now: datetime, holds: list[Hold]) -> set[str]:
    """Record why each lead was held and push its next try back; fenced like every write."""
    if not holds:
        return set()
    rows = [
        {
            "campaignLeadId": h.campaignLeadId,
            "reason": h.reason,
            "until": h.until,
            "giveUp": h.give_up,
        }
        for h in holds
    ]
    return set(session.scalars(HOLD, {"rows": json_rows(rows), "token": token, "now": now}).all())
