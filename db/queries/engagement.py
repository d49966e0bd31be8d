"""Ingesting engagement events in bulk: match to sends, deduplicate, quarantine, stop leads.

A chunk of events costs a handful of set-based statements over a JSON array, whatever its size.
Stop rules and reply intents run only for events inserted now (`RETURNING` of the deduplicating
insert), in the same transaction, so ingesting the same input twice changes nothing the second
time, and no reply is ever recorded without its decision. Chunks may be written concurrently;
their stop rules take turns.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.engagement.events import BounceKind, NormalisedEvent
from core.engagement.machine import (
    DEFAULT_RULES,
    MachineReason,
    MachineRules,
    classify_engagement,
)
from core.engagement.report import IngestColumn
from core.ids import ordered_id_prefix
from core.replies.config import ReplyPolicy
from core.replies.intent import Classification
from core.replies.rules import classify_by_rules
from core.statuses import CampaignLeadStatus, EngagementType
from db.base import UTCDateTime
from db.models import EngagementInbox
from db.queries.replies import NewReply, ReplyOutcome, act_on_replies
from db.queries.rows import json_rows
from db.queries.run_mailboxes import NO_JIT
from db.queries.stops import AddressStop, cancel_for_enrolments, stop_addresses

DEFAULT_POLICY = ReplyPolicy()

# One statement per chunk: match each event to its send, record the matched ones once, quarantine
# the rest once, and answer with counts per (source, type, bounce kind, outcome) plus the send
# ids of new events that can stop a lead. Reading back a row per event cost more than the
# insert: a chunk's answer is now a few dozen rows, and the events cross the wire once.
#
# An event finds its send by our id echoed back, then our Message-ID, then (replies) any
# Message-ID it refers to, then the latest handed-over send to that address; each lookup runs
# only when the ones before it found nothing. Event ids are the chunk's time-ordered prefix and
# the row's position (32 hex digits, like new_id()): ascending keys append to the primary key's
# B-tree instead of splitting random pages. Rows go in by dedupe key, so two chunks in flight
# that share keys wait for each other in one order and never deadlock.
_MATCHED = """
    WITH event AS MATERIALIZED (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
            n int, "sendId" text, "messageId" text, refs text[], email text, type text,
            bounce text, "occurredAt" timestamptz, metadata jsonb, "dedupeKey" text, source text,
            "isMachine" boolean, "machineReason" text)
    ),
    matched AS MATERIALIZED (
        SELECT e.*, COALESCE(by_id.id, by_message.id, by_reference.id, by_address.id) AS send
        FROM event e
        LEFT JOIN "EmailSend" by_id ON by_id.id = e."sendId"
        LEFT JOIN LATERAL (
            SELECT s.id FROM "EmailSend" s
            WHERE by_id.id IS NULL AND s."providerMessageId" = e."messageId" LIMIT 1
        ) by_message ON true
        LEFT JOIN LATERAL (
            SELECT s.id FROM "EmailSend" s
            WHERE by_id.id IS NULL AND by_message.id IS NULL
              AND e.refs IS NOT NULL AND s."providerMessageId" = ANY(e.refs)
            ORDER BY s."sentAt" NULLS LAST LIMIT 1
        ) by_reference ON true
        LEFT JOIN LATERAL (
            SELECT s.id FROM "EmailSend" s
            WHERE by_id.id IS NULL AND by_message.id IS NULL AND by_reference.id IS NULL
              AND e.email IS NOT NULL AND lower(s."toEmail") = lower(e.email)
              AND s.status IN ('sent', 'unknown', 'failed')
            ORDER BY s."attemptedAt" DESC NULLS LAST LIMIT 1
        ) by_address ON true
    )
"""
INGEST = text(
    _MATCHED
    + """,
    recorded AS (
        INSERT INTO "EngagementEvent" (id, "emailSendId", type, "occurredAt", metadata,
                                       "createdAt", "dedupeKey", source, "isMachine",
                                       "machineReason")
        SELECT :id_prefix || lpad(to_hex(m.n), 6, '0'), m.send, m.type,
               (m."occurredAt" AT TIME ZONE 'UTC'), m.metadata, :now, m."dedupeKey", m.source,
               m."isMachine", m."machineReason"
        FROM matched m WHERE m.send IS NOT NULL
        ORDER BY m."dedupeKey"
        ON CONFLICT ("dedupeKey") DO NOTHING
        RETURNING id, "dedupeKey"
    ),
    quarantined AS (
        INSERT INTO "EngagementQuarantine" (id, "dedupeKey", source, type, "occurredAt",
            "providerMessageId", email, reason, payload, "createdAt")
        SELECT replace(gen_random_uuid()::text, '-', ''), m."dedupeKey", m.source, m.type,
               (m."occurredAt" AT TIME ZONE 'UTC'), COALESCE(m."messageId", m.refs[1]), m.email,
               'no EmailSend matches its send id, Message-ID or address', m.metadata, :now
        FROM matched m WHERE m.send IS NULL
        ORDER BY m."dedupeKey"
        ON CONFLICT ("dedupeKey") DO NOTHING
        RETURNING "dedupeKey"
    )
    SELECT m.source, m.type, m.bounce, m."machineReason",
           CASE WHEN r."dedupeKey" IS NOT NULL THEN 'new'
                WHEN q."dedupeKey" IS NOT NULL THEN 'quarantined'
                ELSE 'duplicate' END AS outcome,
           count(*) AS n,
           array_agg(m.send) FILTER (WHERE r."dedupeKey" IS NOT NULL AND m.type = ANY(:stopping))
               AS sends,
           jsonb_agg(jsonb_build_object('key', m."dedupeKey", 'event', r.id, 'send', m.send))
               FILTER (WHERE r."dedupeKey" IS NOT NULL AND m.type = ANY(:classified))
               AS replies,
           array_agg(DISTINCT m.send) FILTER (WHERE r."dedupeKey" IS NOT NULL AND m.type = 'click')
               AS clicked
    FROM matched m
    LEFT JOIN recorded r ON r."dedupeKey" = m."dedupeKey"
    LEFT JOIN quarantined q ON q."dedupeKey" = m."dedupeKey"
    GROUP BY 1, 2, 3, 4, 5
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# Which events would be recorded now: matched to a send and not ingested before. Replies among
# them are worth an LLM call; one to no send of ours, or one already acted on, is not.
NEW_MATCHED = text(
    _MATCHED
    + """
    SELECT m."dedupeKey" FROM matched m
    WHERE m.send IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM "EngagementEvent" e WHERE e."dedupeKey" = m."dedupeKey")
    """
)

# A soft bounce counts on its enrolment, once per message (a provider retrying one message
# reports every deferral): a message whose soft bounce another chunk recorded (ids outside this
# chunk's prefix) has counted already. At the limit the enrolment is bounced.
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
                AND e.metadata ->> 'bounceKind' = 'soft' AND NOT starts_with(e.id, :id_prefix))
          GROUP BY 1, 2) x
    WHERE cl."campaignId" = x."campaignId" AND cl."leadId" = x."leadId"
    RETURNING cl.id, cl.status = 'bounced' AND cl."stopReason" = 'soft_bounces' AS stopped
    """
).bindparams(bindparam("now", type_=UTCDateTime))

# Held by the transaction applying the timing rules until it commits. The pass sees only clicks
# committed before its statement started (and its own chunk's), so two chunks in flight holding
# clicks of one sweep would each miss the other's and neither would mark them; taking turns
# here, the later chunk's pass starts after the earlier one committed, sees both clicks and
# marks both.
MACHINE_CLICKS_ONE_AT_A_TIME = text(
    "SELECT pg_advisory_xact_lock(hashtext('campaign-pipeline:machine-clicks'))"
)

# The timing rules of core.engagement.machine (`_by_timing`) in SQL, over every click of the
# given sends whichever chunk recorded it, so no click travels to Python. A click not marked yet
# is a machine's when it came less than the window after its send's handover (sentAt, else the
# attempt: `window_ends` is the first moment that is not too soon; NULL when the rule is off),
# else when the links clicked on its email within the burst either side (a window frame over
# the email's clicks in time order) hold one other than its own (a missing URL counts as a link
# of its own). Each send's clicks are read once, through the emailSendId index: the OFFSET 0
# keeps that lookup per send even when stale statistics make a scan of the whole table look
# cheaper (a first big import), and the redundant `= ANY(ARRAY(...))` gives the UPDATE the
# primary key to find the marked rows by, for the same reason. Each rule only adds a verdict
# and a marked click keeps its reason, so the result is the same whatever order and chunks the
# clicks arrive in. The answer is how many were marked, by reason.
MARK_MACHINE_CLICKS = text(
    """
    WITH click AS MATERIALIZED (
        SELECT c.id, c."isMachine", c.url, c."occurredAt" < s.window_ends AS too_soon,
               array_agg(c.url) OVER (
                   PARTITION BY s.id ORDER BY c."occurredAt"
                   RANGE BETWEEN CAST(:burst AS interval) PRECEDING
                             AND CAST(:burst AS interval) FOLLOWING) AS links_nearby
        FROM (
            SELECT id, COALESCE("sentAt", "attemptedAt") + CAST(:window AS interval)
                       AS window_ends
            FROM "EmailSend" WHERE id = ANY(CAST(:send_ids AS text[]))
        ) s
        CROSS JOIN LATERAL (
            SELECT c.id, c."isMachine", c.metadata ->> 'url' AS url, c."occurredAt"
            FROM "EngagementEvent" c
            WHERE c."emailSendId" = s.id AND c.type = 'click'
            OFFSET 0
        ) c
    ),
    verdict AS MATERIALIZED (
        SELECT id, CASE WHEN too_soon THEN :too_soon ELSE :burst_reason END AS reason
        FROM click c
        WHERE NOT "isMachine"
          AND (too_soon
               OR CAST(:burst AS interval) > interval '0'
                  AND EXISTS (SELECT FROM unnest(links_nearby) l WHERE l IS DISTINCT FROM c.url))
    ),
    marked AS (
        UPDATE "EngagementEvent" e SET "isMachine" = true, "machineReason" = v.reason
        FROM verdict v
        WHERE e.id = v.id AND e.id = ANY(ARRAY(SELECT id FROM verdict))
        RETURNING v.reason
    )
    SELECT reason, count(*) FROM marked GROUP BY 1
    """
)

# Held by the transaction applying a chunk's stop rules until it commits.
STOPS_ONE_AT_A_TIME = text(
    "SELECT pg_advisory_xact_lock(hashtext('campaign-pipeline:engagement-stops'))"
)

# The workspace and address of each send, for address-wide stops.
SEND_ADDRESSES = text(
    """
    SELECT s.id, c."workspaceId", s."toEmail"
    FROM "EmailSend" s JOIN "Campaign" c ON c.id = s."campaignId"
    WHERE s.id = ANY(:send_ids)
    """
)


# Address-wide stops: the enrolment's new status and the rule (also the Suppression reason).
_ADDRESS_RULES = {
    EngagementType.unsubscribe: (CampaignLeadStatus.unsubscribed, "unsubscribed"),
    EngagementType.complaint: (CampaignLeadStatus.unsubscribed, "complaint"),
    EngagementType.bounce: (CampaignLeadStatus.bounced, "bounced"),
}

# Event types whose new events stop a lead by rule; replies and auto-replies act by their
# intent (db.queries.replies), opens and clicks are counted (a machine's apart).
STOPPING_TYPES = list(_ADDRESS_RULES)
# Event types classified by intent.
CLASSIFIED_TYPES = [EngagementType.reply, EngagementType.auto_reply]


@dataclass
class IngestResult:
    """What one chunk did: events per (source, type, outcome), the stops by rule, and what its
    replies said and did."""

    outcomes: Counter[tuple[str, str, IngestColumn]] = field(default_factory=Counter)
    # Enrolments stopped per rule: replied (or the reply's intent: interested, meeting_request,
    # not_interested, referral), company_replied, soft_bounces, bounced, unsubscribed, complaint.
    stopped: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    replies: ReplyOutcome = field(default_factory=ReplyOutcome)
    # Opens and clicks taken for a machine's, by rule: the new ones by what they say, and the
    # clicks (of this chunk or earlier) marked by timing.
    machine: Counter[str] = field(default_factory=Counter)


@dataclass
class _NewStops:
    """The sends of this chunk's new events that stop leads by rule, and its new replies."""

    soft_bounces: list[str] = field(default_factory=list)
    by_address: dict[str, tuple[CampaignLeadStatus, str]] = field(default_factory=dict)
    replies: list[NewReply] = field(default_factory=list)


def new_matched_keys(session: Session, events: list[NormalisedEvent]) -> set[str]:
    """The dedupe keys of the events that ingesting them now would record (matched to a send of
    ours, not recorded before): the replies among them are the ones worth classifying."""
    keyed = {event.dedupe_key(): event for event in events}
    if not keyed:
        return set()
    return set(session.scalars(NEW_MATCHED, {"rows": json_rows(_event_rows(keyed))}))


def ingest_events(
    session: Session,
    events: list[NormalisedEvent],
    *,
    now: datetime,
    soft_bounce_limit: int,
    policy: ReplyPolicy = DEFAULT_POLICY,
    classified: Mapping[str, Classification] | None = None,
    machine_rules: MachineRules = DEFAULT_RULES,
) -> IngestResult:
    """Record a chunk of events and apply the stop rules and reply intents of those new.

    `classified` holds the classifications already made (by dedupe key, an LLM's); a new reply
    or auto-reply without one is classified by the rules here, so every one recorded is decided
    in the same transaction. Each open and click is recorded with its machine verdict by what
    it says (provider flag, user agent, address); then the clicks of every email with a new
    one are classified again by timing, with all of that email's clicks.
    """
    result = IngestResult()
    keyed: dict[str, NormalisedEvent] = {}
    for event in events:
        key = event.dedupe_key()
        if key in keyed:
            # The same event twice in one input.
            result.outcomes[(event.source, event.type.value, IngestColumn.duplicate)] += 1
        else:
            keyed[key] = event
    if not keyed:
        return result
    id_prefix = ordered_id_prefix()
    params = {
        "rows": json_rows(_event_rows(keyed, machine_rules)),
        "now": now,
        "id_prefix": id_prefix,
        "stopping": [kind.value for kind in STOPPING_TYPES],
        "classified": [kind.value for kind in CLASSIFIED_TYPES],
    }
    stops = _NewStops()
    # Sorted, so that a send with two address-wide events in one chunk always takes the same rule.
    answer = sorted(session.execute(INGEST, params), key=lambda row: tuple(map(str, row[:5])))
    clicked: set[str] = set()
    for source, kind, bounce, machine, outcome, n, sends, replies, clicks in answer:
        clicked.update(clicks or ())
        if machine and outcome == IngestColumn.new:
            result.machine[machine] += n
        # The statement's outcome column spells IngestColumn's values.
        result.outcomes[(source, kind, IngestColumn(outcome))] += n
        stops.replies += [_new_reply(keyed[r["key"]], r, classified or {}) for r in replies or ()]
        if not sends:
            continue
        if bounce == BounceKind.soft:
            stops.soft_bounces += sends
        elif kind in _ADDRESS_RULES:
            stops.by_address |= dict.fromkeys(sends, _ADDRESS_RULES[kind])
    if clicked:
        result.machine.update(mark_machine_clicks(session, sorted(clicked), machine_rules))
    if stops.replies or stops.soft_bounces or stops.by_address:
        # One chunk at a time applies stops (chunks in flight, overlapping runs): two chunks
        # locking the same enrolments in opposite orders would deadlock, and a soft bounce
        # counts only against chunks committed before it.
        session.execute(STOPS_ONE_AT_A_TIME)
        result.replies = act_on_replies(session, stops.replies, policy=policy, now=now)
        result.stopped.update(result.replies.stopped)
        result.cancelled += result.replies.cancelled
        _apply_stops(
            session,
            stops,
            result,
            now=now,
            soft_bounce_limit=soft_bounce_limit,
            id_prefix=id_prefix,
        )
    return result


def mark_machine_clicks(session: Session, send_ids: list[str], rules: MachineRules) -> Counter[str]:
    """Mark the clicks of these sends that the timing rules take for a machine's; how many, by
    rule.

    Every click of each send counts, whichever chunk recorded it, so the verdict is the same
    whatever order the clicks arrived in; a click already marked stays as it is.
    """
    session.execute(MACHINE_CLICKS_ONE_AT_A_TIME)
    # A per-send lookup over a chunk's sends is costed high while the statistics are stale, and
    # compiling it took ten times as long as running it.
    session.execute(NO_JIT)
    params = {
        "send_ids": send_ids,
        # A zero threshold turns its rule off (MachineRules).
        "window": rules.click_window or None,
        "burst": rules.burst,
        "too_soon": MachineReason.click_too_soon_after_delivery.value,
        "burst_reason": MachineReason.all_links_same_second.value,
    }
    return Counter({reason: n for reason, n in session.execute(MARK_MACHINE_CLICKS, params)})


def _event_rows(
    keyed: Mapping[str, NormalisedEvent], rules: MachineRules = DEFAULT_RULES
) -> list[dict[str, Any]]:
    """The events as the statements' JSON rows (never a reply's text, user agent or address),
    each with its machine verdict by what it says."""
    verdicts = {key: classify_engagement(e, rules=rules) for key, e in keyed.items()}
    return [
        {
            "n": n,
            "sendId": e.send_id,
            "messageId": e.message_id,
            "refs": list(e.references) or None,
            "email": e.email,
            "type": e.type.value,
            "bounce": e.bounce_kind.value if e.bounce_kind else None,
            "occurredAt": e.occurred_at,
            "metadata": e.event_metadata(),
            "dedupeKey": key,
            "source": e.source,
            "isMachine": verdicts[key].is_machine,
            "machineReason": verdicts[key].reason,
        }
        for n, (key, e) in enumerate(keyed.items())
    ]


def _new_reply(
    event: NormalisedEvent, recorded: Mapping[str, str], classified: Mapping[str, Classification]
) -> NewReply:
    """A reply recorded now, with its classification: the one made before, else the rules'."""
    received = event.occurred_at.date()
    classification = classified.get(recorded["key"]) or classify_by_rules(
        event.reply, received=received
    )
    return NewReply(
        event_id=recorded["event"],
        send_id=recorded["send"],
        type=event.type,
        occurred_at=event.occurred_at,
        classification=classification,
        text=event.reply.text if event.reply else "",
    )


def _apply_stops(
    session: Session,
    new: _NewStops,
    result: IngestResult,
    *,
    now: datetime,
    soft_bounce_limit: int,
    id_prefix: str,
) -> None:
    soft, by_address = new.soft_bounces, new.by_address
    enrolments: list[str] = []
    if soft:
        params = {"send_ids": soft, "limit": soft_bounce_limit, "now": now, "id_prefix": id_prefix}
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


def store_inbox_payload(
    session: Session, provider: str, payload: Any, replay_key: str | None
) -> str | None:
    """Insert one webhook payload; its id, or None when (provider, replay key) was seen.

    The unique index decides, so two copies of one request racing each other store one row.
    """
    return session.scalar(
        insert(EngagementInbox)
        .values(provider=provider, payload=payload, replayKey=replay_key)
        .on_conflict_do_nothing(index_elements=["provider", "replayKey"])
        .returning(EngagementInbox.id)
    )


def claim_inbox(session: Session, *, limit: int) -> list[tuple[str, str, Any]]:
    """Lock up to limit unprocessed webhook payloads: (id, provider, payload)."""
    return [tuple(row) for row in session.execute(CLAIM_INBOX, {"limit": limit})]


def mark_inbox(session: Session, done: dict[str, str | None], *, now: datetime) -> None:
    """Mark payloads processed, each with its error (a payload that is not an event), if any."""
    if done:
        rows = [{"id": key, "error": error} for key, error in done.items()]
        session.execute(MARK_INBOX, {"rows": json_rows(rows), "now": now})
