"""Follow-up threads: what earlier steps sent each lead of a batch, and what came back.

One statement per batch, whatever its size, run beside the claim that took the batch: the sends
of every lead at an earlier step of its campaign that went out (`sent`), the subject and body of
the message each carried, and the events on each that are kinds of `CameBack` and no machine's
(`EngagementEvent.isMachine`), aggregated per lead. Which of those clicks a person made, and how
much of it the model sees, is decided in `core.generation.thread`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.generation.due_lead import DueLead
from core.generation.thread import CameBack, SentEmail
from core.statuses import EmailSendStatus

# The pipeline writes `sentAt` with every `sent` status; a row another writer (the web app, a
# hand fix) marked `sent` without it takes its handover time or its last change instead, since
# one missing date must not fail the claim of a whole batch. Each lead's thread comes back as one
# JSON text that pydantic parses directly: half the client CPU of a row per email, and the
# claim runs in the CPU-bound flow process.
THREADS = text(
    """
    SELECT x."campaignId", x."leadId", x."stepOrder",
           CAST(json_agg(json_build_object(
               'stepOrder', st."stepOrder",
               'sentAt', s.sent_at,
               'subject', gm.subject,
               'body', gm.body,
               'events', COALESCE(ev.events, '[]')) ORDER BY s.sent_at) AS text) AS thread
    FROM unnest(CAST(:campaign_ids AS text[]), CAST(:lead_ids AS text[]),
                CAST(:step_orders AS int[])) AS x("campaignId", "leadId", "stepOrder")
    CROSS JOIN LATERAL (
        SELECT s.id, s."stepId", s."generatedMessageId",
               COALESCE(s."sentAt", s."attemptedAt", s."updatedAt") AT TIME ZONE 'UTC' AS sent_at
        FROM "EmailSend" s
        WHERE s."leadId" = x."leadId" AND s."campaignId" = x."campaignId" AND s.status = :sent
    ) s
    JOIN "SequenceStep" st ON st.id = s."stepId" AND st."stepOrder" < x."stepOrder"
    JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_object(
                   'kind', e.type,
                   'occurredAt', e."occurredAt" AT TIME ZONE 'UTC',
                   'url', e.metadata ->> 'url') ORDER BY e."occurredAt") AS events
        FROM "EngagementEvent" e
        WHERE e."emailSendId" = s.id AND e.type = ANY(CAST(:kinds AS text[]))
          AND NOT e."isMachine"
    ) ev ON true
    GROUP BY x."campaignId", x."leadId", x."stepOrder"
    """
)
_THREAD = TypeAdapter(tuple[SentEmail, ...])


def due_leads(session: Session, rows: Sequence[Mapping[Any, Any]]) -> list[DueLead]:
    """DueLeads from rows of their columns, follow-ups with their threads, oldest email first.

    One statement loads every thread of the batch; a batch with no lead past step 1 costs none.
    """
    follow_ups = [row for row in rows if row["stepOrder"] > 1]
    threads: dict[tuple[str, str, int], tuple[SentEmail, ...]] = {}
    if follow_ups:
        params = {
            "campaign_ids": [row["campaignId"] for row in follow_ups],
            "lead_ids": [row["leadId"] for row in follow_ups],
            "step_orders": [row["stepOrder"] for row in follow_ups],
            "kinds": [kind.value for kind in CameBack],
            "sent": EmailSendStatus.sent.value,
        }
        for campaign_id, lead_id, step_order, thread in session.execute(THREADS, params):
            threads[(campaign_id, lead_id, step_order)] = _THREAD.validate_json(thread)
    return [
        DueLead.model_validate(
            {**row, "thread": threads.get((row["campaignId"], row["leadId"], row["stepOrder"]), ())}
        )
        for row in rows
    ]
