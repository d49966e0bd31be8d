"""Acting on classified replies, in the transaction that records them.

Each new reply or auto-reply event gets its `ReplyClassification` row first; the unique index on
the event id admits one row per event, and only the rows inserted now are acted on, so a reply
ingested again (the same event, a duplicate) never stops, reschedules, enrols or unsubscribes a
second time. Then, in an order where a stop always wins: follow-ups wait for a return date,
referred colleagues are enrolled, unsubscribes take the link's operation, and leads stop.
Replies are few next to opens and clicks, so the actions are a few statements per reply.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.campaigns.campaign_file import first_send_date
from core.generation.pricing import cost_column
from core.replies.actions import (
    Decision,
    Referrer,
    ReplyAction,
    decide,
    moved_schedule,
    referral_row,
    resume_at,
)
from core.replies.config import ReplyPolicy
from core.replies.intent import Classification, Intent
from core.statuses import CampaignLeadStatus, EngagementType
from db.base import UTCDateTime, new_id
from db.queries.enrolment import enrol_leads, insert_new_lead
from db.queries.rows import json_rows
from db.queries.stops import cancel_for_enrolments
from db.queries.unsubscribe import unsubscribe_recipient

# What a reply knows of its send: the campaign, the enrolment and the lead it answers.
REPLY_CONTEXT = (
    text(
        """
    SELECT s.id AS "sendId", s."campaignId", s."leadId", c."workspaceId", c."sendingRules",
           c."startAt", cl.id AS "enrolmentId", cl.status AS "enrolmentStatus",
           cl."nextScheduledDate", l.email, l."firstName", l."lastName", l.timezone,
           l."customFields" -> 'country' AS country, l."companyName", l.website, l.industry,
           l."companySize",
           (SELECT min(p."scheduledFor") FROM "EmailSend" p
            WHERE p."campaignId" = s."campaignId" AND p."leadId" = s."leadId"
              AND p.status = 'scheduled') AS "firstPending"
    FROM "EmailSend" s
    JOIN "Campaign" c ON c.id = s."campaignId"
    JOIN "Lead" l ON l.id = s."leadId"
    LEFT JOIN "CampaignLead" cl ON cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
    WHERE s.id = ANY(:send_ids)
    """
    )
    .columns(startAt=UTCDateTime, nextScheduledDate=UTCDateTime, firstPending=UTCDateTime)
    .bindparams(bindparam("send_ids"))
)

CLASSIFY = text(
    """
    INSERT INTO "ReplyClassification" (id, "engagementEventId", intent, confidence, "returnDate",
        "referralEmail", "referralName", summary, method, model, "promptVersion", "inputHash",
        "promptTokens", "completionTokens", "latencyMs", "costUsd", note, action, "createdAt")
    SELECT x.id, x.event, x.intent, x.confidence, x."returnDate", x."referralEmail",
           x."referralName", x.summary, x.method, x.model, x."promptVersion", x."inputHash",
           x."promptTokens", x."completionTokens", x."latencyMs", x."costUsd", x.note, x.action,
           :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        id text, event text, intent text, confidence float8, "returnDate" date,
        "referralEmail" text, "referralName" text, summary text, method text, model text,
        "promptVersion" text, "inputHash" text, "promptTokens" int, "completionTokens" int,
        "latencyMs" int, "costUsd" numeric, note text, action text)
    ORDER BY x.event
    ON CONFLICT ("engagementEventId") DO NOTHING
    RETURNING "engagementEventId"
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# What the action did, written once it is done.
RECORD_ACTIONS = text(
    """
    UPDATE "ReplyClassification" r
    SET action = x.action, "actionDetail" = x.detail,
        "resumeAt" = (x."resumeAt" AT TIME ZONE 'UTC'), "referralLeadId" = x."referralLeadId"
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x(event text, action text, detail text, "resumeAt" timestamptz, "referralLeadId" text)
    WHERE r."engagementEventId" = x.event
    """
)

# Pending sends that would leave before the lead is back move to that moment; a send a delivery
# run has claimed loses its claim, so that run's handover guard refuses it.
RESCHEDULE_SENDS = text(
    """
    UPDATE "EmailSend"
    SET "scheduledFor" = :resume, "statusReason" = :reason,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    WHERE "campaignId" = :campaign_id AND "leadId" = :lead_id AND status = 'scheduled'
      AND "scheduledFor" < :resume
    RETURNING id
    """
).bindparams(*(bindparam(name, type_=UTCDateTime) for name in ("resume", "now")))
# The next step waits as well; a generation run holding the lead loses its claim, so its
# write (fenced by the claim token) cannot schedule the step early.
RESCHEDULE_ENROLMENT = text(
    """
    UPDATE "CampaignLead"
    SET "nextScheduledDate" = :next,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    WHERE id = :id AND status = 'active' AND "nextScheduledDate" < :next
    RETURNING id
    """
).bindparams(*(bindparam(name, type_=UTCDateTime) for name in ("next", "now")))

SUPPRESSED = text(
    """
    SELECT EXISTS (SELECT 1 FROM "Suppression"
                   WHERE "workspaceId" = :workspace_id AND lower(email) = lower(:email))
    """
)

# A reply stops its own enrolment, a completed one included, and one an earlier colleague's
# reply stopped becomes replied too (it did reply), with the reason its intent gave; with
# stopOnCompanyReply, every other active enrolment of the campaign at the same email domain
# stops as `company_replied`. Colleagues are found from the domain (an index on Lead) rather
# than by reading the campaign's enrolments; a lead who replied in this chunk is never also
# stopped as a colleague. `own` is false for a lead the unsubscribe already stopped: only its
# colleagues are left to stop.
STOP_REPLIED = text(
    """
    WITH replied AS (
        SELECT DISTINCT ON (s."campaignId", s."leadId")
               s."campaignId", s."leadId", c."workspaceId", x.reason, x.own,
               split_part(lower(s."toEmail"), '@', 2) AS domain,
               c."sendingRules" -> 'stopOnCompanyReply' = 'true'::jsonb AS company
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(send text, reason text, own boolean)
        JOIN "EmailSend" s ON s.id = x.send
        JOIN "Campaign" c ON c.id = s."campaignId"
        ORDER BY s."campaignId", s."leadId", x.own DESC, x.reason
    ),
    own AS (
        UPDATE "CampaignLead" cl
        SET status = 'replied', "stopReason" = r.reason, "nextScheduledDate" = NULL,
            "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
        FROM replied r
        WHERE r.own AND cl."campaignId" = r."campaignId" AND cl."leadId" = r."leadId"
          AND (cl.status IN ('active', 'paused', 'completed')
               OR cl."stopReason" = 'company_replied')
        RETURNING cl.id, r.reason AS rule
    ),
    colleague AS (
        SELECT DISTINCT r."campaignId", l.id AS "leadId"
        FROM replied r
        JOIN "Lead" l ON l."workspaceId" = r."workspaceId"
                     AND split_part(lower(l.email), '@', 2) = r.domain
        WHERE r.company
          AND NOT EXISTS (SELECT 1 FROM replied o
                          WHERE o."campaignId" = r."campaignId" AND o."leadId" = l.id)
    ),
    colleagues AS (
        UPDATE "CampaignLead" cl
        SET status = 'stopped', "stopReason" = 'company_replied', "nextScheduledDate" = NULL,
            "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
        FROM colleague m
        WHERE cl."campaignId" = m."campaignId" AND cl."leadId" = m."leadId"
          AND cl.status IN ('active', 'paused')
        RETURNING cl.id, 'company_replied' AS rule
    )
    SELECT id, rule FROM own UNION ALL SELECT id, rule FROM colleagues
    """
).bindparams(bindparam("now", type_=UTCDateTime))

_NOTIFIED = frozenset({Intent.interested, Intent.meeting_request})


@dataclass(frozen=True)
class NewReply:
    """A reply or auto-reply event recorded now, its classification, and the text it read."""

    event_id: str
    send_id: str
    type: EngagementType
    occurred_at: datetime
    classification: Classification
    text: str


@dataclass(frozen=True)
class Interest:
    """A lead who wants to talk: what the `campaign-pipeline.lead.interested` event carries."""

    campaign_id: str
    lead_id: str
    intent: str
    summary: str


@dataclass
class ReplyOutcome:
    """What a chunk's replies did: intents, actions, enrolments stopped by reason, sends
    cancelled, follow-ups moved, leads enrolled by referral, and who wants to talk."""

    intents: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    stopped: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    rescheduled: int = 0
    referred: int = 0
    interested: list[Interest] = field(default_factory=list)


@dataclass
class _Done:
    """One classification's action as it turned out."""

    action: ReplyAction
    detail: str | None = None
    resume: datetime | None = None
    referral_lead: str | None = None


def act_on_replies(
    session: Session, replies: list[NewReply], *, policy: ReplyPolicy, now: datetime
) -> ReplyOutcome:
    """Classify each reply once (its row) and take its action; only new rows act."""
    outcome = ReplyOutcome()
    if not replies:
        return outcome
    decisions = {
        r.event_id: decide(r.classification.intent, r.type, min_confidence=policy.min_confidence)
        for r in replies
    }
    rows = [_classification_row(r, decisions[r.event_id]) for r in replies]
    fresh = set(session.scalars(CLASSIFY, {"rows": json_rows(rows), "now": now}))
    # In order of arrival; stops come after every reschedule, so a reply that stops the lead
    # wins over an absence in the same chunk, whichever came first.
    acting = sorted((r for r in replies if r.event_id in fresh), key=lambda r: r.occurred_at)
    if not acting:
        return outcome
    context = {
        row["sendId"]: dict(row)
        for row in session.execute(
            REPLY_CONTEXT, {"send_ids": sorted({r.send_id for r in acting})}
        ).mappings()
    }
    done: dict[str, _Done] = {}
    stops: list[dict[str, Any]] = []
    for reply in acting:
        decision = decisions[reply.event_id]
        intent = reply.classification.intent
        outcome.intents[intent.intent.value] += 1
        # The event's send row is locked by its new event's foreign key: it is there.
        where = context[reply.send_id]
        if decision.action is ReplyAction.rescheduled:
            done[reply.event_id] = _reschedule(session, reply, where, policy=policy, now=now)
            outcome.rescheduled += done[reply.event_id].action is ReplyAction.rescheduled
        elif decision.action is ReplyAction.referred:
            done[reply.event_id] = _refer(session, reply, where, now=now)
            outcome.referred += done[reply.event_id].referral_lead is not None
        elif decision.action is ReplyAction.unsubscribed:
            result = unsubscribe_recipient(session, reply.send_id, source="reply", now=now)
            if result is not None:
                outcome.stopped["unsubscribed"] += len(result[0].stopped)
                outcome.cancelled += len(result[0].cancelled)
            done[reply.event_id] = _Done(ReplyAction.unsubscribed)
        else:
            done[reply.event_id] = _Done(decision.action, decision.stop_reason)
        if decision.stop_reason is not None or decision.action is ReplyAction.unsubscribed:
            # A person answered: the lead stops, and with stopOnCompanyReply its colleagues.
            own = decision.action is not ReplyAction.unsubscribed
            stops.append({"send": reply.send_id, "reason": decision.stop_reason, "own": own})
        # Only a trusted intent notifies: a doubtful "interested" stops as a plain reply.
        if intent.intent in _NOTIFIED and decision.stop_reason == intent.intent.value:
            outcome.interested.append(
                Interest(where["campaignId"], where["leadId"], intent.intent.value, intent.summary)
            )
    if stops:
        enrolments = []
        for enrolment, rule in session.execute(
            STOP_REPLIED, {"rows": json_rows(stops), "now": now}
        ):
            outcome.stopped[rule] += 1
            enrolments.append(enrolment)
        outcome.cancelled += cancel_for_enrolments(session, enrolments, now=now)
    for finished in done.values():
        outcome.actions[finished.action.value] += 1
    session.execute(RECORD_ACTIONS, {"rows": json_rows(_action_rows(done))})
    return outcome


def _reschedule(
    session: Session,
    reply: NewReply,
    where: Mapping[str, Any],
    *,
    policy: ReplyPolicy,
    now: datetime,
) -> _Done:
    """Move the lead's pending follow-up to the first allowed moment after its return."""
    status = where["enrolmentStatus"]
    if status not in (
        CampaignLeadStatus.active,
        CampaignLeadStatus.paused,
        CampaignLeadStatus.completed,
    ):
        return _Done(ReplyAction.recorded, f"nothing to reschedule: the lead is {status}")
    intent = reply.classification.intent
    resume = resume_at(
        intent,
        now=now,
        default_pause=policy.default_pause,
        raw_rules=where["sendingRules"],
        lead_timezone=where["timezone"],
        lead_country=where["country"],
    )
    next_step = where["nextScheduledDate"] if status == CampaignLeadStatus.active else None
    new_next, _ = moved_schedule(resume, next_step=next_step, first_pending=where["firstPending"])
    back = intent.return_date.isoformat() if intent.return_date else "no date given"
    reason = f"reply: {intent.intent.value} ({back}), follow-up waits"
    moved = session.execute(
        RESCHEDULE_SENDS,
        {
            "resume": resume,
            "reason": reason,
            "campaign_id": where["campaignId"],
            "lead_id": where["leadId"],
            "now": now,
        },
    ).all()
    if new_next is not None:
        session.execute(
            RESCHEDULE_ENROLMENT, {"id": where["enrolmentId"], "next": new_next, "now": now}
        )
    detail = f"{len(moved)} pending send(s) moved; next step from {new_next or '-'}"
    return _Done(ReplyAction.rescheduled, detail, resume=resume)


def _refer(session: Session, reply: NewReply, where: Mapping[str, Any], *, now: datetime) -> _Done:
    """Enrol the referred person at step 1 of the same campaign, when allowed; the referrer
    stops either way (its stop is with the others)."""
    referrer = Referrer(
        lead_id=where["leadId"],
        email=where["email"],
        first_name=where["firstName"],
        last_name=where["lastName"],
        profile=where,
    )
    row = referral_row(reply.classification.intent, reply_text=reply.text, referrer=referrer)
    if isinstance(row, str):
        return _Done(ReplyAction.referred, f"referral not enrolled: {row}")
    workspace_id = where["workspaceId"]
    params = {"workspace_id": workspace_id, "email": row["email"]}
    if session.scalar(SUPPRESSED, params):
        return _Done(ReplyAction.referred, "referral not enrolled: the address is suppressed")
    lead_id = insert_new_lead(session, workspace_id, row)
    if lead_id is None:
        detail = "referral not enrolled: the address is already a lead of the workspace"
        return _Done(ReplyAction.referred, detail)
    enrol_leads(session, where["campaignId"], [lead_id], first_send_date(now, where["startAt"]))
    return _Done(ReplyAction.referred, "referral enrolled at step 1", referral_lead=lead_id)


def _classification_row(reply: NewReply, decision: Decision) -> dict[str, Any]:
    found = reply.classification
    intent = found.intent
    return {
        "id": new_id(),
        "event": reply.event_id,
        "intent": intent.intent.value,
        "confidence": intent.confidence,
        "returnDate": intent.return_date,
        "referralEmail": intent.referral_email,
        "referralName": intent.referral_name,
        "summary": intent.summary,
        "method": found.method.value,
        "model": found.model,
        "promptVersion": found.prompt_version,
        "inputHash": found.input_hash,
        "promptTokens": found.prompt_tokens if found.model else None,
        "completionTokens": found.completion_tokens if found.model else None,
        "latencyMs": found.latency_ms if found.model else None,
        "costUsd": cost_column(found.cost_usd) if found.model else None,
        "note": found.note,
        "action": decision.action.value,
    }


def _action_rows(done: Mapping[str, _Done]) -> list[dict[str, Any]]:
    return [
        {
            "event": event,
            "action": result.action.value,
            "detail": result.detail,
            "resumeAt": result.resume,
            "referralLeadId": result.referral_lead,
        }
        for event, result in done.items()
    ]
