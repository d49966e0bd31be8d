"""Reconciling: the `unknown` sends with their mailbox's IMAP login, and the fenced verdicts.

A verdict lands only on a send that is still `unknown` from the same handover (the same
`attemptedAt` and claim token as read), so two overlapping runs settle each send once, and a
send scheduled again and cut short a second time is never settled by a stale verdict.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from core.delivery.reconcile import Reconciliation, UnknownHandover
from db.base import UTCDateTime
from db.queries.rows import json_rows

# The mailbox is the `Mailbox` row of the campaign's workspace with the send's address; its IMAP
# settings come in the mailbox file's shape, like `mailbox check` reads them. Oldest first. The
# witness is the mailbox's latest send accepted before the handover: if the Sent folder lacks it
# too, the folder's silence proves nothing.
UNKNOWN_SENDS = text(
    """
    SELECT s.id AS send_id, s."campaignId" AS campaign_id, s.mailbox,
           s."providerMessageId" AS message_id, s."attemptedAt" AS attempted_at,
           s."claimToken" AS claim_token, w."providerMessageId" AS witness, m.id AS mailbox_id,
           CASE WHEN m."imapHost" IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
               'host', m."imapHost", 'port', m."imapPort", 'ssl', m."imapSsl",
               'username', m."imapUsername", 'password', m."imapPasswordRef",
               'folder', m."imapFolder"))
           END AS imap
    FROM "EmailSend" s
    JOIN "Campaign" c ON c.id = s."campaignId"
    LEFT JOIN "Mailbox" m ON m."workspaceId" = c."workspaceId" AND lower(m.email) = lower(s.mailbox)
    LEFT JOIN LATERAL (
        SELECT p."providerMessageId" FROM "EmailSend" p
        WHERE p.mailbox = s.mailbox AND p."attemptedAt" < s."attemptedAt" AND p.status = 'sent'
          AND p."providerMessageId" IS NOT NULL
        ORDER BY p."attemptedAt" DESC
        LIMIT 1
    ) w ON true
    WHERE s.status = 'unknown'
    ORDER BY s."attemptedAt" NULLS FIRST, s.id
    LIMIT :limit
    """
).columns(attempted_at=UTCDateTime)

SETTLE_UNKNOWN = text(
    """
    UPDATE "EmailSend" s
    SET status = x.status, "statusReason" = x.reason,
        "sentAt" = CASE WHEN x.status = 'sent' THEN x.sent_at AT TIME ZONE 'UTC'
                        ELSE s."sentAt" END,
        "attemptedAt" = CASE WHEN x.status = 'scheduled' THEN NULL ELSE s."attemptedAt" END,
        "claimedBy" = NULL, "claimedUntil" = NULL, "claimToken" = NULL, "updatedAt" = :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        id text, status text, reason text, sent_at timestamptz, attempted_at timestamptz,
        token text)
    WHERE s.id = x.id AND s.id = ANY(CAST(:ids AS text[]))
      AND s.status = 'unknown'
      AND s."attemptedAt" = x.attempted_at AT TIME ZONE 'UTC'
      AND s."claimToken" IS NOT DISTINCT FROM x.token
    RETURNING s.id
    """
).bindparams(bindparam("now", type_=UTCDateTime))


@dataclass(frozen=True)
class UnknownRow:
    """An `unknown` send and its mailbox: `send` is None when the row lacks what a search needs
    (a mailbox, a Message-ID, a handover time); `imap` is None without a row or its IMAP."""

    send_id: str
    campaign_id: str
    mailbox: str | None
    mailbox_id: str | None
    imap: dict[str, object] | None
    send: UnknownHandover | None


def read_unknown_sends(session: Session, *, limit: int) -> list[UnknownRow]:
    """Up to `limit` `unknown` sends, oldest handover first, each with its mailbox's IMAP login."""
    answer = session.execute(UNKNOWN_SENDS, {"limit": limit})
    rows = []
    for row in answer.mappings():
        complete = row["mailbox"] and row["message_id"] and row["attempted_at"]
        send = None
        if complete:
            send = UnknownHandover(
                send_id=row["send_id"],
                campaign_id=row["campaign_id"],
                mailbox=row["mailbox"],
                message_id=row["message_id"],
                attempted_at=row["attempted_at"],
                claim_token=row["claim_token"],
                witness=row["witness"],
            )
        rows.append(
            UnknownRow(
                send_id=row["send_id"],
                campaign_id=row["campaign_id"],
                mailbox=row["mailbox"],
                mailbox_id=row["mailbox_id"],
                imap=row["imap"],
                send=send,
            )
        )
    return rows


def settle_unknown_sends(
    session: Session, verdicts: list[Reconciliation], *, now: datetime
) -> set[str]:
    """Write `sent` or `scheduled` verdicts, fenced; returns the sends written (others moved on)."""
    if not verdicts:
        return set()
    rows = [
        {
            "id": v.send.send_id,
            "status": v.status.value,
            "reason": v.reason,
            "sent_at": v.sent_at,
            "attempted_at": v.send.attempted_at,
            "token": v.send.claim_token,
        }
        for v in verdicts
    ]
    params = {"rows": json_rows(rows), "ids": [r["id"] for r in rows], "now": now}
    return set(session.scalars(SETTLE_UNKNOWN, params))
