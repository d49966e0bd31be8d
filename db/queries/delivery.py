"""Delivery queries: claim due sends, find abandoned handovers, guard each handover, record results.

A claim stamps each send with a lease and a fresh `claimToken`, like the generation claim; every
later write is conditional on that token, so a run that lost its claim writes nothing. The
handover guard is one statement that commits `sending` only while the lead is still sendable
and the caps and the mailbox gap still allow it, counting on the day's counter rows of the
mailbox and the campaign, whose row locks keep two overlapping runs from both taking the last
slot of a cap.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, RowMapping, Text, bindparam, text
from sqlalchemy.orm import Session

from core.delivery.lane import HandoverGuard, SendUpdate
from core.delivery.plan import DueSend, MailboxUsage, Usage
from core.delivery.report import UnknownSend
from core.statuses import EmailSendStatus
from db.base import UTCDateTime
from db.queries.claims import leased_claim
from db.queries.rows import compact, json_rows

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
           l.timezone AS "leadTimezone", l."customFields" -> 'country' AS "leadCountry",
           gm.subject, gm.body, gm.status AS "messageStatus", s."scheduledFor", s.attempts,
           COALESCE(s.mailbox, root.mailbox) AS mailbox,
           cl.status AS "leadStatus", c.status AS "campaignStatus",
           c."statusReason" AS "campaignStatusReason",
           EXISTS (SELECT 1 FROM "Suppression" x
                   WHERE x."workspaceId" = c."workspaceId"
                     AND lower(x.email) = lower(s."toEmail")) AS suppressed,
           (COALESCE(c."sendingRules" -> 'stopOnCompanyReply' = 'true'::jsonb, false) AND EXISTS (
                SELECT 1 FROM "CampaignLead" o JOIN "Lead" ol ON ol.id = o."leadId"
                WHERE o."campaignId" = s."campaignId" AND o.status = 'replied'
                  AND o."leadId" <> s."leadId"
                  AND split_part(lower(ol.email), '@', 2)
                      = split_part(lower(s."toEmail"), '@', 2))) AS "companyReplied",
           c."sendingRules"::text AS "sendingRules",
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

# The counters of each campaign's and mailbox's day, created from the day's sends when a day is
# first used (the only time they are counted); a mailbox's row starts from its last handover,
# so the gap also holds across midnight. Another run may create a row between this statement's
# snapshot and its insert: that row is then missing from the answer, which only makes the plan
# optimistic; the handover guard is what enforces caps.
USAGE = text(
    f"""
    WITH wanted AS (
        SELECT 'campaign' AS scope, x.key, (x.since AT TIME ZONE 'UTC') AS day
        FROM jsonb_to_recordset(CAST(:campaigns AS jsonb)) AS x(key text, since timestamptz)
        UNION ALL
        SELECT 'mailbox', x.key, (x.since AT TIME ZONE 'UTC')
        FROM jsonb_to_recordset(CAST(:mailboxes AS jsonb)) AS x(key text, since timestamptz)
    ), created AS (
        INSERT INTO "DeliveryCounter" (scope, key, day, used, "lastAt")
        SELECT w.scope, w.key, w.day,
               CASE WHEN w.scope = 'campaign' THEN
                   (SELECT count(*) FROM "EmailSend" s
                    WHERE s."campaignId" = w.key AND s."attemptedAt" >= w.day)
               ELSE
                   (SELECT count(*) FROM "EmailSend" s
                    WHERE s.mailbox = w.key AND s."attemptedAt" >= w.day)
               END,
               CASE WHEN w.scope = 'mailbox' THEN
                   (SELECT max(s."attemptedAt") FROM "EmailSend" s
                    WHERE s.mailbox = w.key AND s."attemptedAt" >= w.day - interval '1 day'
                      AND s.status IN {HANDED_OVER})
               END
        FROM wanted w
        WHERE NOT EXISTS (SELECT 1 FROM "DeliveryCounter" k
                          WHERE k.scope = w.scope AND k.key = w.key AND k.day = w.day)
        ON CONFLICT DO NOTHING
        RETURNING scope, key, used, "lastAt"
    )
    SELECT scope, key, used, "lastAt" AS last FROM created
    UNION ALL
    SELECT k.scope, k.key, k.used, k."lastAt"
    FROM "DeliveryCounter" k
    JOIN wanted w ON k.scope = w.scope AND k.key = w.key AND k.day = w.day
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

# Results of handovers, fenced by the token. `unknown` is accepted as a prior status so a slow
# worker's own late answer still lands after a rescue; a retry goes back to `scheduled`. An
# `untried` send was handed over and given back before the transport was called (its mailbox
# went down): its attempt is taken back, so no send counts one it never had.
_RESULTS = """
    UPDATE "EmailSend" s
    SET status = x.status, "statusReason" = x.reason,
        attempts = s.attempts - CASE WHEN x.untried THEN 1 ELSE 0 END,
        "sentAt" = CASE WHEN x.status = 'sent' THEN :now ELSE s."sentAt" END,
        "scheduledFor" = COALESCE(x.at AT TIME ZONE 'UTC', s."scheduledFor"),
        "attemptedAt" = CASE WHEN x.status = 'scheduled' THEN NULL ELSE s."attemptedAt" END,
        "claimedBy" = CASE WHEN x.status = 'unknown' THEN s."claimedBy" END,
        "claimedUntil" = CASE WHEN x.status = 'unknown' THEN s."claimedUntil" END,
        "claimToken" = CASE WHEN x.status = 'unknown' THEN s."claimToken" END,
        "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS x(id text, status text, reason text, at timestamptz, untried boolean)
    WHERE s.id = x.id AND s.id = ANY(CAST(:ids AS text[]))
      AND s."claimToken" = :token AND s.status IN ('sending', 'unknown')
    RETURNING s.id
"""

# The results of the lane's previous handovers and its next group of handovers, in one
# statement and so one transaction (the lane runs it in autocommit: one round trip per group).
# Everything that may have changed since the plan is checked again here: stops, suppression,
# the campaign's status, the status of the sending mailbox's row if it has one (a circuit
# breaker or an operator may have paused it), both daily caps and the gap. The caps are the
# day's counter rows of the campaign and the mailbox, locked in that order (so overlapping runs
# queue on them without deadlocks) and read at their latest values; the group takes what room
# they have left, in slot order, and the rest is refused. A missing counter row (a day the plan
# did not prepare) counts as no room. A lane that reserved room in the campaign's cap
# (RESERVE_CAMPAIGN_ROOM) passes what it has left as :campaign_reserved: the campaign's row is
# then neither locked nor counted again, only the mailbox's. That parameter is read through a
# row (`reservation`), never compared directly: a planner that could fold it would plan the
# statement again at every handover rather than keep the prepared statement's generic plan.
# Review before send: a message pending review or rejected never goes out, nor a draft written
# ahead (`pregenerated`) that its lead's generation run has not adopted.
#
# The statement runs once a send, so it is sent compacted (`compact`): psycopg caches how it
# turns a statement's placeholders into PostgreSQL's only up to 4,096 characters, and parsed
# the indented statement again at every handover, a fifth of the lane's own CPU.
HAND_OVER_GROUP = text(
    compact(
        f"""
    WITH done AS ({_RESULTS}),
    reservation AS MATERIALIZED (SELECT CAST(:campaign_reserved AS int) AS room),
    sendable AS (
        SELECT x.id, x.ord, x.message_id
        FROM jsonb_to_recordset(CAST(:sends AS jsonb)) AS x(id text, ord int, message_id text)
        JOIN "EmailSend" s ON s.id = x.id
        JOIN "Campaign" c ON c.id = s."campaignId"
        WHERE s.id = ANY(CAST(:send_ids AS text[]))
          AND s."claimToken" = :token AND s.status = 'scheduled' AND c.status = 'active'
          AND NOT EXISTS (SELECT 1 FROM "GeneratedMessage" gm
                          WHERE gm.id = s."generatedMessageId"
                            AND gm.status IN ('pending_review', 'rejected', 'pregenerated'))
          AND NOT EXISTS (SELECT 1 FROM "CampaignLead" cl
                          WHERE cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
                            AND cl.status NOT IN ('active', 'completed'))
          AND NOT EXISTS (SELECT 1 FROM "Suppression" x
                          WHERE x."workspaceId" = c."workspaceId"
                            AND lower(x.email) = lower(s."toEmail"))
          AND NOT EXISTS (SELECT 1 FROM "Mailbox" m
                          WHERE m."workspaceId" = c."workspaceId"
                            AND lower(m.email) = :mailbox AND m.status <> 'active')
    ), counters AS (
        SELECT k.scope, k.used, k."lastAt"
        FROM "DeliveryCounter" k
        WHERE k.day = :day
          AND ((k.scope = 'campaign' AND k.key = :campaign_id
                AND (SELECT room FROM reservation) IS NULL)
               OR (k.scope = 'mailbox' AND k.key = :mailbox))
        ORDER BY k.scope
        FOR UPDATE
    ), room AS (
        SELECT LEAST(
            (SELECT count(*) FROM sendable),
            COALESCE((SELECT room FROM reservation),
                     (SELECT :campaign_limit - used FROM counters WHERE scope = 'campaign'), 0),
            COALESCE((SELECT CASE WHEN CAST(:gap_since AS timestamp) IS NOT NULL
                                       AND "lastAt" > :gap_since THEN 0
                                  ELSE :mailbox_limit - used END
                      FROM counters WHERE scope = 'mailbox'), 0)
        ) AS n
    ), campaign_cap AS (
        UPDATE "DeliveryCounter" k SET used = k.used + r.n
        FROM room r
        WHERE k.scope = 'campaign' AND k.key = :campaign_id AND k.day = :day AND r.n > 0
          AND (SELECT room FROM reservation) IS NULL
        RETURNING k.used
    ), mailbox_cap AS (
        UPDATE "DeliveryCounter" k SET used = k.used + r.n, "lastAt" = :now
        FROM room r
        WHERE k.scope = 'mailbox' AND k.key = :mailbox AND k.day = :day AND r.n > 0
        RETURNING k.used
    ), handed AS (
        UPDATE "EmailSend" s
        SET status = 'sending', "providerMessageId" = x.message_id, mailbox = :mailbox,
            "attemptedAt" = :now, "claimedUntil" = :lease_until, attempts = s.attempts + 1,
            "statusReason" = NULL, "updatedAt" = :now
        FROM (SELECT id, message_id, row_number() OVER (ORDER BY ord) AS rn FROM sendable) x,
             room r
        WHERE s.id = x.id AND x.rn <= r.n AND s.id = ANY(CAST(:send_ids AS text[]))
          AND s."claimToken" = :token AND s.status = 'scheduled'
        RETURNING s.id
    )
    SELECT ARRAY(SELECT id FROM done) AS written, ARRAY(SELECT id FROM handed) AS handed
    """
    )
).bindparams(
    bindparam("now", type_=UTCDateTime),
    bindparam("lease_until", type_=UTCDateTime),
    bindparam("day", type_=UTCDateTime),
    bindparam("gap_since", type_=UTCDateTime),
)

RECORD_RESULTS = text(_RESULTS).bindparams(bindparam("now", type_=UTCDateTime))

# Room in campaigns' daily caps taken for a lane's sends before its first handover, so that
# the lanes of one campaign do not queue on its counter row, one commit at a time. Each
# (campaign, day) gets what it asks for or what is left under its cap; the rows are locked in
# key order (two lanes never deadlock), and a day without its counter row gets nothing.
RESERVE_CAMPAIGN_ROOM = text(
    """
    WITH wanted AS (
        SELECT x.ord, x.key, (x.day AT TIME ZONE 'UTC') AS day, x.want, x.cap
        FROM jsonb_to_recordset(CAST(:rows AS jsonb))
             AS x(ord int, key text, day timestamptz, want int, cap int)
    ), locked AS (
        SELECT w.ord, k.key, k.day, LEAST(w.want, GREATEST(w.cap - k.used, 0)) AS granted
        FROM "DeliveryCounter" k
        JOIN wanted w ON k.scope = 'campaign' AND k.key = w.key AND k.day = w.day
        ORDER BY k.key, k.day
        FOR UPDATE OF k
    ), taken AS (
        UPDATE "DeliveryCounter" k SET used = k.used + l.granted
        FROM locked l
        WHERE k.scope = 'campaign' AND k.key = l.key AND k.day = l.day AND l.granted > 0
    )
    SELECT ord, granted FROM locked
    """
)

# What a lane reserved and did not hand over goes back to the caps, in the same lock order.
RELEASE_CAMPAIGN_ROOM = text(
    """
    WITH unused AS (
        SELECT x.key, (x.day AT TIME ZONE 'UTC') AS day, x.unused
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(key text, day timestamptz, unused int)
        WHERE x.unused > 0
    ), locked AS (
        SELECT k.key, k.day, u.unused
        FROM "DeliveryCounter" k
        JOIN unused u ON k.scope = 'campaign' AND k.key = u.key AND k.day = u.day
        ORDER BY k.key, k.day
        FOR UPDATE OF k
    )
    UPDATE "DeliveryCounter" k SET used = GREATEST(k.used - l.unused, 0)
    FROM locked l
    WHERE k.scope = 'campaign' AND k.key = l.key AND k.day = l.day
    """
)


@dataclass(frozen=True)
class ResultRow:
    """A handover's result as a row update: sent, failed, unknown, or scheduled (a retry)."""

    send_id: str
    status: EmailSendStatus
    reason: str | None = None
    at: datetime | None = None
    untried: bool = False  # given back before the transport was called: the attempt is undone


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


def _due_sends(rows: Iterable[RowMapping]) -> list[DueSend]:
    """The sends of `_DETAILS` rows, each campaign's sendingRules decoded once, not once a send:
    decoding them row by row was a tenth of the delivery flow's own CPU with 20 mailboxes."""
    rules: dict[str, Any] = {}
    sends = []
    for row in rows:
        raw = row["sendingRules"]
        if raw is not None and raw not in rules:
            rules[raw] = json.loads(raw)
        sends.append(DueSend.model_validate({**row, "sendingRules": rules.get(raw)}))
    return sends


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
    return token, _due_sends(rows)


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
    return _due_sends(session.execute(PREVIEW_DUE_SENDS, params).mappings())


def reload_send(session: Session, *, send_id: str, token: str) -> DueSend | None:
    """A claimed send as it is now, or None when it is no longer ours or no longer scheduled."""
    row = session.execute(ONE_SEND, {"id": send_id, "token": token}).mappings().first()
    return _due_sends([row])[0] if row else None


def rescue_abandoned_sends(session: Session, *, now: datetime) -> list[UnknownSend]:
    """Mark `sending` rows whose lease ran out as `unknown`; returns them for the operator."""
    return [
        UnknownSend(
            send_id=row["sendId"],
            campaign_id=row["campaignId"],
            mailbox=row["mailbox"],
            reason=row["statusReason"],
        )
        for row in session.execute(RESCUE_ABANDONED, {"now": now}).mappings()
    ]


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
    """Handovers since each campaign's and mailbox's local midnight, and each mailbox's last.

    Creates the day's counter rows the handover guard needs, so it runs before a lane starts.
    """
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


def settle(
    session: Session | Connection, *, token: str, now: datetime, updates: list[SendUpdate]
) -> set[str]:
    """Write deferrals, cancellations and failures decided before any handover."""
    if not updates:
        return set()
    rows = [
        {"id": u.send_id, "status": u.status, "reason": u.reason, "at": u.at, "mailbox": u.mailbox}
        for u in updates
    ]
    params = {"rows": json_rows(rows), "ids": [r["id"] for r in rows], "token": token, "now": now}
    return set(session.scalars(SETTLE, params))


def _result_params(results: list[ResultRow]) -> dict[str, Any]:
    rows = [
        {"id": r.send_id, "status": r.status, "reason": r.reason, "at": r.at, "untried": r.untried}
        for r in results
    ]
    # The id list lets the planner use the primary key: it cannot size a JSON recordset.
    return {"rows": json_rows(rows), "ids": [r["id"] for r in rows]}


def hand_over_group(
    connection: Connection,
    guard: HandoverGuard,
    *,
    results: list[ResultRow],
    token: str,
    now: datetime,
    lease: timedelta,
    campaign_reserved: int | None = None,
) -> tuple[set[str], set[str]]:
    """Write earlier results and set `sending` on the sends of a group that may still go out.

    One statement: on a connection in autocommit it is its own transaction and one round trip.
    Returns the result rows written (the others were taken over) and the sends that are ours
    to deliver now. With `campaign_reserved` (room the caller holds in the campaign's cap for
    `guard.day`, see `reserve_campaign_room`) the group takes at most that and the campaign's
    counter is left alone; the caller deducts what was handed over.
    """
    sends = [
        {"id": send_id, "ord": i, "message_id": message_id}
        for i, (send_id, message_id) in enumerate(guard.sends)
    ]
    params = _result_params(results) | {
        "sends": json_rows(sends),
        "send_ids": [send_id for send_id, _ in guard.sends],
        "campaign_id": guard.campaign_id,
        "token": token,
        "now": now,
        "lease_until": now + lease,
        "mailbox": guard.mailbox,
        "day": guard.day,
        "mailbox_limit": guard.mailbox_limit,
        "campaign_limit": guard.campaign_limit,
        "campaign_reserved": campaign_reserved,
        # No gap, no check: parallel connections of one mailbox stamp overlapping instants.
        "gap_since": now - guard.min_gap if guard.min_gap else None,
    }
    written, handed = connection.execute(HAND_OVER_GROUP, params).one()
    return set(written), set(handed)


def record_results(
    session: Session | Connection, *, token: str, now: datetime, results: list[ResultRow]
) -> set[str]:
    """Write handover results; returns the send ids written (others were taken over)."""
    if not results:
        return set()
    params = _result_params(results) | {"token": token, "now": now}
    return set(session.scalars(RECORD_RESULTS, params))


@dataclass(frozen=True)
class CampaignRoom:
    """Room in one campaign's cap for one of its local days: wanted, then granted or unused."""

    campaign_id: str
    day: datetime
    sends: int
    limit: int = 0


def reserve_campaign_room(connection: Connection, wanted: list[CampaignRoom]) -> list[int]:
    """Take room in the campaigns' daily caps; returns what each entry got, in order."""
    if not wanted:
        return []
    rows = [
        {"ord": i, "key": w.campaign_id, "day": w.day, "want": w.sends, "cap": w.limit}
        for i, w in enumerate(wanted)
    ]
    answer = connection.execute(RESERVE_CAMPAIGN_ROOM, {"rows": json_rows(rows)})
    granted: dict[int, int] = {ord_: got for ord_, got in answer}
    return [granted.get(i, 0) for i in range(len(wanted))]


def release_campaign_room(connection: Connection, unused: list[CampaignRoom]) -> None:
    """Give back room taken by `reserve_campaign_room` and not handed over."""
    rows = [{"key": u.campaign_id, "day": u.day, "unused": u.sends} for u in unused if u.sends]
    if rows:
        connection.execute(RELEASE_CAMPAIGN_ROOM, {"rows": json_rows(rows)})
