"""Ingesting engagement events in bulk: match to sends, deduplicate, quarantine, stop leads.

A chunk of events costs a handful of set-based statements over a JSON array, whatever its size.
Stop rules run only for events inserted now (`RETURNING` of the deduplicating insert), in the
same transaction, so ingesting the same input twice changes nothing the second time.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.engagement import BounceKind, NormalisedEvent
from core.ids import ordered_id_prefix
from core.statuses import CampaignLeadStatus, EngagementType
from db.base import UTCDateTime
from db.queries.rows import json_rows
from db.queries.stops import AddressStop, cancel_for_enrolments, stop_addresses

# Which send an event belongs to: our id echoed back, then our Message-ID, then (replies) any
# Message-ID it refers to, then the latest handed-over send to that address. Each lookup runs
# only when the ones before it found nothing.
MATCH = text(
    """
    SELECT x.i, COALESCE(by_id.id, by_message.id, by_reference.id, by_address.id) AS "sendId"
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x(i int, "sendId" text, "messageId" text, refs text[], email text)
    LEFT JOIN "EmailSend" by_id ON by_id.id = x."sendId"
    LEFT JOIN LATERAL (
        SELECT s.id FROM "EmailSend" s
        WHERE by_id.id IS NULL AND s."providerMessageId" = x."messageId" LIMIT 1
    ) by_message ON true
    LEFT JOIN LATERAL (
        SELECT s.id FROM "EmailSend" s
        WHERE by_id.id IS NULL AND by_message.id IS NULL
          AND x.refs IS NOT NULL AND s."providerMessageId" = ANY(x.refs)
        ORDER BY s."sentAt" NULLS LAST LIMIT 1
    ) by_reference ON true
    LEFT JOIN LATERAL (
        SELECT s.id FROM "EmailSend" s
        WHERE by_id.id IS NULL AND by_message.id IS NULL AND by_reference.id IS NULL
          AND x.email IS NOT NULL AND lower(s."toEmail") = lower(x.email)
          AND s.status IN ('sent', 'unknown', 'failed')
        ORDER BY s."attemptedAt" DESC NULLS LAST LIMIT 1
    ) by_address ON true
    """
)

# Ids are the chunk's time-ordered prefix and the row's position (32 hex digits, like new_id()):
# ascending keys append to the primary key's B-tree instead of splitting random pages.
INSERT_EVENTS = text(
    """
    INSERT INTO "EngagementEvent" (id, "emailSendId", type, "occurredAt", metadata, "createdAt",
                                   "dedupeKey", source)
    SELECT :id_prefix || lpad(to_hex(x.n), 6, '0'), x."sendId", x.type,
           (x."occurredAt" AT TIME ZONE 'UTC'), x.metadata, :now, x."dedupeKey", x.source
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        n int, "sendId" text, type text, "occurredAt" timestamptz, metadata jsonb,
        "dedupeKey" text, source text)
    ON CONFLICT ("dedupeKey") DO NOTHING
    RETURNING "dedupeKey"
    """
).bindparams(bindparam("now", type_=UTCDateTime))

QUARANTINE = text(
    """
    INSERT INTO "EngagementQuarantine" (id, "dedupeKey", source, type, "occurredAt",
        "providerMessageId", email, reason, payload, "createdAt")
    SELECT replace(gen_random_uuid()::text, '-', ''), x."dedupeKey", x.source, x.type,
           (x."occurredAt" AT TIME ZONE 'UTC'), x."messageId", x.email, x.reason, x.metadata,
           :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        "dedupeKey" text, source text, type text, "occurredAt" timestamptz, "messageId" text,
        email text, reason text, metadata jsonb)
    ON CONFLICT ("dedupeKey") DO NOTHING
    RETURNING "dedupeKey"
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# A reply stops its own enrolment, a completed one included; with stopOnCompanyReply, every
# other enrolment of the campaign at the same email domain stops too. Colleagues are found from
# the domain (an index on Lead) rather than by reading the campaign's enrolments; a lead who
# replied in this chunk is never also stopped as a colleague.
STOP_REPLIED = text(
    """
    WITH replied AS (
        SELECT DISTINCT s."campaignId", s."leadId", c."workspaceId",
               split_part(lower(s."toEmail"), '@', 2) AS domain,
               c."sendingRules" -> 'stopOnCompanyReply' = 'true'::jsonb AS company
        FROM "EmailSend" s JOIN "Campaign" c ON c.id = s."campaignId"
        WHERE s.id = ANY(:send_ids)
    ),
    own AS (
        UPDATE "CampaignLead" cl
        SET status = 'replied', "stopReason" = 'replied', "nextScheduledDate" = NULL,
            "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
        FROM replied r
        WHERE cl."campaignId" = r."campaignId" AND cl."leadId" = r."leadId"
          AND cl.status IN ('active', 'paused', 'completed')
        RETURNING cl.id, 'replied' AS rule
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

# A soft bounce counts on its enrolment, once per message (a provider retrying one message
# reports every deferral); at the limit the enrolment is bounced.
COUNT_SOFT_BOUNCES = text(
    """
    UPDATE "CampaignLead" cl
    SET "softBounces" = cl."softBounces" + x.n,
        status = CASE WHEN cl."softBounces" + x.n >= :limit AND cl.status IN ('active', 'paused')
                      THEN 'bounced' ELSE cl.status END,
        "stopReason" = CASE WHEN cl."softBounces" + x.n >= :limit
                                 AND cl.status IN ('active', 'paused')
                            THEN 'soft_bounces' ELSE cl."stopReason" END,
        "updatedAt" = :now
    FROM (SELECT s."campaignId", s."leadId", count(DISTINCT s.id) AS n
          FROM "EmailSend" s JOIN unnest(CAST(:send_ids AS text[])) AS b(id) ON b.id = s.id
          WHERE NOT EXISTS (
              SELECT 1 FROM "EngagementEvent" e
              WHERE e."emailSendId" = s.id AND e.type = 'bounce'
                AND e.metadata ->> 'bounceKind' = 'soft' AND e."createdAt" < :now)
          GROUP BY 1, 2) x
    WHERE cl."campaignId" = x."campaignId" AND cl."leadId" = x."leadId"
    RETURNING cl.id, cl.status = 'bounced' AND cl."stopReason" = 'soft_bounces' AS stopped
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# The workspace and address of each send, for address-wide stops.
SEND_ADDRESSES = text(
    """
    SELECT s.id, c."workspaceId", s."toEmail"
    FROM "EmailSend" s JOIN "Campaign" c ON c.id = s."campaignId"
    WHERE s.id = ANY(:send_ids)
    """
)


@dataclass
class IngestResult:
    """What one chunk did: new, duplicate and quarantined events, and the stops by rule."""

    new: list[NormalisedEvent] = field(default_factory=list)
    duplicates: list[NormalisedEvent] = field(default_factory=list)
    quarantined: list[NormalisedEvent] = field(default_factory=list)
    # Enrolments stopped per rule: replied, company_replied, soft_bounces, bounced,
    # unsubscribed, complaint.
    stopped: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0


def match_sends(session: Session, events: list[NormalisedEvent]) -> list[str | None]:
    """The EmailSend id of each event, or None, in order."""
    rows = [
        {
            "i": i,
            "sendId": e.send_id,
            "messageId": e.message_id,
            "refs": list(e.references) or None,
            "email": e.email,
        }
        for i, e in enumerate(events)
    ]
    found: list[str | None] = [None] * len(events)
    for i, send_id in session.execute(MATCH, {"rows": json_rows(rows)}):
        found[i] = send_id
    return found


def ingest_events(
    session: Session, events: list[NormalisedEvent], *, now: datetime, soft_bounce_limit: int
) -> IngestResult:
    """Record a chunk of events and apply the stop rules of those new to the database."""
    result = IngestResult()
    keyed: dict[str, NormalisedEvent] = {}
    for event in events:
        key = event.dedupe_key()
        if key in keyed:
            result.duplicates.append(event)  # the same event twice in one input
        else:
            keyed[key] = event
    if not keyed:
        return result
    keys = list(keyed)
    sends = dict(zip(keys, match_sends(session, list(keyed.values())), strict=True))
    rows = [
        {
            "n": n,
            "sendId": sends[key],
            "type": keyed[key].type.value,
            "occurredAt": keyed[key].occurred_at,
            "metadata": keyed[key].event_metadata(),
            "dedupeKey": key,
            "source": keyed[key].source,
        }
        for n, key in enumerate(keys)
        if sends[key] is not None
    ]
    params = {"rows": json_rows(rows), "now": now, "id_prefix": ordered_id_prefix()}
    inserted = set(session.scalars(INSERT_EVENTS, params))
    unmatched = [key for key in keys if sends[key] is None]
    quarantined: set[str] = set()
    if unmatched:
        rows = [
            {
                "dedupeKey": key,
                "source": keyed[key].source,
                "type": keyed[key].type.value,
                "occurredAt": keyed[key].occurred_at,
                "messageId": keyed[key].message_id or next(iter(keyed[key].references), None),
                "email": keyed[key].email,
                "reason": "no EmailSend matches its send id, Message-ID or address",
                "metadata": keyed[key].event_metadata(),
            }
            for key in unmatched
        ]
        quarantined = set(session.scalars(QUARANTINE, {"rows": json_rows(rows), "now": now}))
    for key in keys:
        if key in inserted:
            result.new.append(keyed[key])
        elif key in quarantined:
            result.quarantined.append(keyed[key])
        else:
            result.duplicates.append(keyed[key])
    new = [(keyed[key], str(sends[key])) for key in keys if key in inserted]
    _apply_stops(session, new, result, now=now, soft_bounce_limit=soft_bounce_limit)
    return result


_ADDRESS_RULES = {
    EngagementType.unsubscribe: (CampaignLeadStatus.unsubscribed, "unsubscribed"),
    EngagementType.complaint: (CampaignLeadStatus.unsubscribed, "complaint"),
    EngagementType.bounce: (CampaignLeadStatus.bounced, "bounced"),
}


def _apply_stops(
    session: Session,
    new: list[tuple[NormalisedEvent, str]],
    result: IngestResult,
    *,
    now: datetime,
    soft_bounce_limit: int,
) -> None:
    soft = [s for e, s in new if e.bounce_kind is BounceKind.soft]
    replies = [s for e, s in new if e.type is EngagementType.reply]
    by_address = {
        s: _ADDRESS_RULES[e.type]
        for e, s in new
        if e.type in _ADDRESS_RULES and e.bounce_kind is not BounceKind.soft
    }
    enrolments: list[str] = []
    if replies:
        for enrolment, rule in session.execute(STOP_REPLIED, {"send_ids": replies, "now": now}):
            result.stopped[rule] += 1
            enrolments.append(enrolment)
    if soft:
        params = {"send_ids": soft, "limit": soft_bounce_limit, "now": now}
        for enrolment, stopped in session.execute(COUNT_SOFT_BOUNCES, params):
            if stopped:
                result.stopped["soft_bounces"] += 1
                enrolments.append(enrolment)
    result.cancelled += cancel_for_enrolments(session, enrolments, now=now)
    if by_address:
        stops = [
            AddressStop(workspace, email, *by_address[send_id])
            for send_id, workspace, email in session.execute(
                SEND_ADDRESSES, {"send_ids": list(by_address)}
            )
        ]
        # Grouped by rule, so each enrolment stopped is counted under the rule that stopped it.
        for reason in sorted({stop.reason for stop in stops}):
            done = stop_addresses(session, [s for s in stops if s.reason == reason], now=now)
            result.stopped[reason] += len(done.stopped)
            result.cancelled += len(done.cancelled)


# Webhook payloads waiting, oldest first; the row locks are held while they are ingested in the
# same transaction, so a payload is marked processed exactly when its events are written.
CLAIM_INBOX = text(
    """
    SELECT id, provider, payload FROM "EngagementInbox"
    WHERE "processedAt" IS NULL
    ORDER BY "receivedAt"
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
MARK_INBOX = text(
    """
    UPDATE "EngagementInbox" i SET "processedAt" = :now, error = x.error
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(id text, error text)
    WHERE i.id = x.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))


def claim_inbox(session: Session, *, limit: int) -> list[tuple[str, str, Any]]:
    """Lock up to limit unprocessed webhook payloads: (id, provider, payload)."""
    return [tuple(row) for row in session.execute(CLAIM_INBOX, {"limit": limit})]


def mark_inbox(session: Session, done: dict[str, str | None], *, now: datetime) -> None:
    """Mark payloads processed, each with its error (a payload that is not an event), if any."""
    if done:
        rows = [{"id": key, "error": error} for key, error in done.items()]
        session.execute(MARK_INBOX, {"rows": json_rows(rows), "now": now})
