"""Follow-up threads: what earlier steps sent each lead of a batch, and what came back.

One statement per batch, whatever its size, run beside the claim that took the batch: the sends
of every lead at an earlier step of its campaign that went out (`sent`), the subject and body of
the message each carried, and the events on each that are kinds of `CameBack`, aggregated per
send. Which clicks a person made, and how much of it the model sees, is decided in
`core.generation.thread`.
"""

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from core.generation.due_lead import DueLead
from core.generation.thread import CameBack, SentEmail
from core.statuses import EmailSendStatus

# `sentAt` is set with the status, except by a reconcile that found the message in a Sent
# folder without a date; then the handover time stands in (and a row's last change after it).
# The events' timestamps are rendered with their zone, so they parse as aware datetimes.
THREADS = text(
    """
    SELECT x."campaignId", x."leadId", x."stepOrder" AS "leadStep", st."stepOrder",
           COALESCE(s."sentAt", s."attemptedAt", s."updatedAt") AT TIME ZONE 'UTC' AS "sentAt",
           gm.subject, gm.body, COALESCE(ev.events, '[]') AS events
    FROM unnest(CAST(:campaign_ids AS text[]), CAST(:lead_ids AS text[]),
                CAST(:step_orders AS int[])) AS x("campaignId", "leadId", "stepOrder")
    JOIN "EmailSend" s ON s."leadId" = x."leadId" AND s."campaignId" = x."campaignId"
    JOIN "SequenceStep" st ON st.id = s."stepId" AND st."stepOrder" < x."stepOrder"
    JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_object(
                   'kind', e.type,
                   'occurredAt', e."occurredAt" AT TIME ZONE 'UTC',
                   'url', e.metadata ->> 'url') ORDER BY e."occurredAt") AS events
        FROM "EngagementEvent" e
        WHERE e."emailSendId" = s.id AND e.type = ANY(CAST(:kinds AS text[]))
    ) ev ON true
    WHERE s.status = :sent
    ORDER BY "sentAt"
    """
)


def due_leads(session: Session, rows: Sequence[RowMapping]) -> list[DueLead]:
    """DueLeads from rows of their columns, follow-ups with their threads.

    One statement loads every thread of the batch; a batch with no lead past step 1 costs none.
    """
    follow_ups = [row for row in rows if row["stepOrder"] > 1]
    threads: defaultdict[tuple[str, str, int], list[SentEmail]] = defaultdict(list)
    if follow_ups:
        params = {
            "campaign_ids": [row["campaignId"] for row in follow_ups],
            "lead_ids": [row["leadId"] for row in follow_ups],
            "step_orders": [row["stepOrder"] for row in follow_ups],
            "kinds": [kind.value for kind in CameBack],
            "sent": EmailSendStatus.sent.value,
        }
        for sent in session.execute(THREADS, params).mappings():
            key = (sent["campaignId"], sent["leadId"], sent["leadStep"])
            threads[key].append(SentEmail.model_validate(sent))
    return [
        DueLead.model_validate(
            {**row, "thread": threads.get((row["campaignId"], row["leadId"], row["stepOrder"]), ())}
        )
        for row in rows
    ]
