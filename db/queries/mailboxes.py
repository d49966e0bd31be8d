"""Sending mailboxes: adding a file's worth, listing them with their health, pausing, resuming.

Campaign pause and resume live here too: both are an operator stopping or restarting mail.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, time

from sqlalchemy import ARRAY, Text, bindparam, text
from sqlalchemy.orm import Session

from core.mailboxes.health import HEALTH_WINDOW, MailboxHealth
from core.mailboxes.mailbox_file import MailboxFile, MailboxSpec
from core.mailboxes.warmup import Warmup
from core.statuses import CampaignStatus, MailboxStatus
from db.base import UTCDateTime
from db.models import Workspace


class UnknownWorkspaceError(LookupError):
    """A mailbox file names a workspace the database does not have."""


# One statement for the whole file. On update the warm-up start is kept unless the file gives
# one, the status is left alone (a paused mailbox stays paused), and the IMAP checkpoint is
# dropped when the folder it belongs to (host, login or folder) changes.
UPSERT = text(
    """
    INSERT INTO "Mailbox" AS m (
        id, "workspaceId", email, name, "smtpHost", "smtpPort", "smtpSecurity", "smtpUsername",
        "smtpPasswordRef", "imapHost", "imapPort", "imapSsl", "imapUsername", "imapPasswordRef",
        "imapFolder", "dailyLimit", "warmupStart", "warmupIncrement", "warmupStartedAt",
        "createdAt", "updatedAt")
    SELECT replace(gen_random_uuid()::text, '-', ''), :workspace_id, x.email, x.name,
           x."smtpHost", x."smtpPort", x."smtpSecurity", x."smtpUsername", x."smtpPasswordRef",
           x."imapHost", x."imapPort", x."imapSsl", x."imapUsername", x."imapPasswordRef",
           x."imapFolder", x."dailyLimit", x."warmupStart", x."warmupIncrement",
           COALESCE(x."warmupStartedAt"::timestamp, :today), :now, :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
        email text, name text, "smtpHost" text, "smtpPort" int, "smtpSecurity" text,
        "smtpUsername" text, "smtpPasswordRef" text, "imapHost" text, "imapPort" int,
        "imapSsl" boolean, "imapUsername" text, "imapPasswordRef" text, "imapFolder" text,
        "dailyLimit" int, "warmupStart" int, "warmupIncrement" int, "warmupStartedAt" date)
    ON CONFLICT ("workspaceId", lower(email)) DO UPDATE SET
        email = excluded.email, name = excluded.name,
        "smtpHost" = excluded."smtpHost", "smtpPort" = excluded."smtpPort",
        "smtpSecurity" = excluded."smtpSecurity", "smtpUsername" = excluded."smtpUsername",
        "smtpPasswordRef" = excluded."smtpPasswordRef",
        "imapHost" = excluded."imapHost", "imapPort" = excluded."imapPort",
        "imapSsl" = excluded."imapSsl", "imapUsername" = excluded."imapUsername",
        "imapPasswordRef" = excluded."imapPasswordRef", "imapFolder" = excluded."imapFolder",
        "imapUidValidity" = CASE WHEN (m."imapHost", m."imapUsername", m."imapFolder")
                IS NOT DISTINCT FROM (excluded."imapHost", excluded."imapUsername",
                                      excluded."imapFolder")
            THEN m."imapUidValidity" END,
        "imapLastUid" = CASE WHEN (m."imapHost", m."imapUsername", m."imapFolder")
                IS NOT DISTINCT FROM (excluded."imapHost", excluded."imapUsername",
                                      excluded."imapFolder")
            THEN m."imapLastUid" END,
        "dailyLimit" = excluded."dailyLimit", "warmupStart" = excluded."warmupStart",
        "warmupIncrement" = excluded."warmupIncrement",
        "warmupStartedAt" = CASE WHEN lower(excluded.email) = ANY(:started_given)
                                 THEN excluded."warmupStartedAt" ELSE m."warmupStartedAt" END,
        "updatedAt" = excluded."updatedAt"
    RETURNING m.email, (xmax = 0) AS created
    """
).bindparams(
    bindparam("today", type_=UTCDateTime),
    bindparam("now", type_=UTCDateTime),
    bindparam("started_given", type_=ARRAY(Text)),
)

# Handovers count in the window whatever their outcome: a 5xx refusal is a send that bounced.
# A bounce without a kind is hard, as ingestion treats it (it stops the address).
LIST = text(
    """
    WITH m AS (
        SELECT * FROM "Mailbox"
        WHERE CAST(:workspace_id AS text) IS NULL OR "workspaceId" = :workspace_id
    ), sends AS (
        SELECT m.id, s.id AS send_id
        FROM m
        JOIN "EmailSend" s ON lower(s.mailbox) = lower(m.email)
        JOIN "Campaign" c ON c.id = s."campaignId" AND c."workspaceId" = m."workspaceId"
    )
    SELECT m.id, m."workspaceId", m.email, m.name, m.status, m."statusReason",
           m."statusChangedAt", m."dailyLimit", m."warmupStart", m."warmupIncrement",
           m."warmupStartedAt", m."imapHost" IS NOT NULL AS has_imap,
           (SELECT count(*) FROM sends JOIN "EmailSend" s ON s.id = sends.send_id
            WHERE sends.id = m.id AND s.status IN ('sent', 'failed', 'unknown')
              AND COALESCE(s."sentAt", s."attemptedAt") >= :since) AS sends,
           (SELECT count(DISTINCT e."emailSendId") FILTER (
                       WHERE e.type = 'bounce'
                         AND e.metadata ->> 'bounceKind' IS DISTINCT FROM 'soft')
            FROM sends JOIN "EngagementEvent" e ON e."emailSendId" = sends.send_id
            WHERE sends.id = m.id AND e."occurredAt" >= :since) AS hard_bounces,
           (SELECT count(DISTINCT e."emailSendId") FILTER (WHERE e.type = 'complaint')
            FROM sends JOIN "EngagementEvent" e ON e."emailSendId" = sends.send_id
            WHERE sends.id = m.id AND e."occurredAt" >= :since) AS complaints
    FROM m
    ORDER BY m."workspaceId", lower(m.email)
    """
).bindparams(bindparam("since", type_=UTCDateTime), bindparam("workspace_id", type_=Text))

FIND = text(
    """
    SELECT id, "workspaceId", email, status FROM "Mailbox"
    WHERE lower(email) = lower(:email)
      AND (CAST(:workspace_id AS text) IS NULL OR "workspaceId" = :workspace_id)
    ORDER BY "workspaceId"
    """
).bindparams(bindparam("workspace_id", type_=Text))

# The status before comes back from the locked row, so the caller can say what changed; a
# repeated command changes nothing.
SET_MAILBOX_STATUS = text(
    """
    WITH old AS (SELECT id, status, "statusReason" FROM "Mailbox" WHERE id = :id FOR UPDATE),
    moved AS (
        UPDATE "Mailbox" m
        SET status = :status, "statusReason" = :reason, "statusChangedAt" = :now,
            "updatedAt" = :now
        FROM old
        WHERE m.id = old.id
          AND (old.status, old."statusReason") IS DISTINCT FROM (:status, :reason)
    )
    SELECT status FROM old
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("reason", type_=Text))

# The time of the change starts the campaign's circuit breaker afresh (see db.queries.breakers).
SET_CAMPAIGN_STATUS = text(
    """
    WITH old AS (SELECT id, status FROM "Campaign" WHERE id = :id FOR UPDATE),
    moved AS (
        UPDATE "Campaign" c
        SET status = :after, "statusReason" = :reason, "statusChangedAt" = :now, "updatedAt" = :now
        FROM old WHERE c.id = old.id AND old.status = :before
    )
    SELECT status FROM old
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("reason", type_=Text))


@dataclass(frozen=True)
class AddedMailboxes:
    """What `add_mailboxes` did, by address as written in the file."""

    created: list[str]
    updated: list[str]


@dataclass(frozen=True)
class MailboxRow:
    """One mailbox as `mailbox list` shows it."""

    id: str
    workspace_id: str
    email: str
    name: str | None
    status: MailboxStatus
    status_reason: str | None
    status_changed_at: datetime | None
    warmup: Warmup
    has_imap: bool
    health: MailboxHealth


@dataclass(frozen=True)
class MailboxRef:
    """A mailbox found by address, and its status."""

    id: str
    workspace_id: str
    email: str
    status: MailboxStatus


def add_mailboxes(session: Session, document: MailboxFile, *, now: datetime) -> AddedMailboxes:
    """Create or update every mailbox of the file by (workspace, address in any case)."""
    if session.get(Workspace, document.workspaceId) is None:
        raise UnknownWorkspaceError(
            f"no workspace {document.workspaceId!r}; create it (the web app, or `campaign create`)"
            " before adding its mailboxes"
        )
    rows = [_row(spec) for spec in document.mailboxes]
    started_given = [
        spec.email.lower() for spec in document.mailboxes if spec.warmup.startedAt is not None
    ]
    today = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    result = session.execute(
        UPSERT,
        {
            "workspace_id": document.workspaceId,
            "rows": json.dumps(rows),
            "today": today,
            "now": now,
            "started_given": started_given,
        },
    )
    added = AddedMailboxes(created=[], updated=[])
    for email, created in result:
        (added.created if created else added.updated).append(email)
    return added


def _row(spec: MailboxSpec) -> dict[str, object]:
    imap = spec.imap
    return {
        "email": spec.email,
        "name": spec.name,
        "smtpHost": spec.smtp.host,
        "smtpPort": spec.smtp.port,
        "smtpSecurity": spec.smtp.security.value,
        "smtpUsername": spec.smtp.username,
        "smtpPasswordRef": str(spec.smtp.password),
        "imapHost": imap.host if imap else None,
        "imapPort": imap.port if imap else None,
        "imapSsl": imap.ssl if imap else None,
        "imapUsername": imap.username if imap else None,
        "imapPasswordRef": str(imap.password) if imap else None,
        "imapFolder": imap.folder if imap else None,
        "dailyLimit": spec.dailyLimit,
        "warmupStart": spec.warmup.start,
        "warmupIncrement": spec.warmup.increment,
        "warmupStartedAt": spec.warmup.startedAt.isoformat() if spec.warmup.startedAt else None,
    }


def list_mailboxes(
    session: Session, *, now: datetime, workspace_id: str | None = None
) -> list[MailboxRow]:
    """A workspace's mailboxes (or every one) with status and their last 7 days' health."""
    answer = session.execute(LIST, {"since": now - HEALTH_WINDOW, "workspace_id": workspace_id})
    return [
        MailboxRow(
            id=row.id,
            workspace_id=row.workspaceId,
            email=row.email,
            name=row.name,
            status=MailboxStatus(row.status),
            status_reason=row.statusReason,
            status_changed_at=_utc(row.statusChangedAt),
            warmup=Warmup(
                daily_limit=row.dailyLimit,
                start=row.warmupStart,
                increment=row.warmupIncrement,
                started_at=row.warmupStartedAt.replace(tzinfo=UTC),
            ),
            has_imap=row.has_imap,
            health=MailboxHealth(
                sends=row.sends, hard_bounces=row.hard_bounces, complaints=row.complaints
            ),
        )
        for row in answer
    ]


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def find_mailboxes(
    session: Session, email: str, *, workspace_id: str | None = None
) -> list[MailboxRef]:
    """The mailboxes with this address (in any case), in one workspace or all of them."""
    answer = session.execute(FIND, {"email": email, "workspace_id": workspace_id})
    return [
        MailboxRef(
            id=r.id, workspace_id=r.workspaceId, email=r.email, status=MailboxStatus(r.status)
        )
        for r in answer
    ]


def pause_mailbox(
    session: Session, mailbox_id: str, *, reason: str, now: datetime
) -> MailboxStatus | None:
    """Pause a mailbox with the reason; its status before, or None when there is no such id."""
    return _set_mailbox_status(session, mailbox_id, MailboxStatus.paused, reason, now)


def resume_mailbox(session: Session, mailbox_id: str, *, now: datetime) -> MailboxStatus | None:
    """Make a paused or disconnected mailbox active again, clearing its reason."""
    return _set_mailbox_status(session, mailbox_id, MailboxStatus.active, None, now)


def _set_mailbox_status(
    session: Session, mailbox_id: str, status: MailboxStatus, reason: str | None, now: datetime
) -> MailboxStatus | None:
    before = session.execute(
        SET_MAILBOX_STATUS,
        {"id": mailbox_id, "status": status.value, "reason": reason, "now": now},
    ).scalar_one_or_none()
    return MailboxStatus(before) if before is not None else None


def pause_campaign(
    session: Session, campaign_id: str, *, now: datetime, reason: str | None = None
) -> CampaignStatus | None:
    """Pause the campaign if it is active, with the reason; its status before, or None when there
    is no such id."""
    return _move_campaign(
        session, campaign_id, CampaignStatus.active, CampaignStatus.paused, reason, now
    )


def resume_campaign(session: Session, campaign_id: str, *, now: datetime) -> CampaignStatus | None:
    """Make the campaign active if it is paused, clearing its reason; its status before, or None
    when unknown."""
    return _move_campaign(
        session, campaign_id, CampaignStatus.paused, CampaignStatus.active, None, now
    )


def _move_campaign(
    session: Session,
    campaign_id: str,
    before: CampaignStatus,
    after: CampaignStatus,
    reason: str | None,
    now: datetime,
) -> CampaignStatus | None:
    params = {
        "id": campaign_id,
        "before": before.value,
        "after": after.value,
        "reason": reason,
        "now": now,
    }
    answer = session.execute(SET_CAMPAIGN_STATUS, params).scalar_one_or_none()
    return CampaignStatus(answer) if answer is not None else None


LOGINS = text(
    """
    SELECT "workspaceId", email, status,
           jsonb_build_object('host', "smtpHost", 'port', "smtpPort", 'security', "smtpSecurity",
                              'username', "smtpUsername", 'password', "smtpPasswordRef") AS smtp,
           CASE WHEN "imapHost" IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
               'host', "imapHost", 'port', "imapPort", 'ssl', "imapSsl",
               'username', "imapUsername", 'password', "imapPasswordRef", 'folder', "imapFolder"))
           END AS imap
    FROM "Mailbox"
    WHERE (CAST(:email AS text) IS NULL OR lower(email) = lower(:email))
      AND (CAST(:workspace_id AS text) IS NULL OR "workspaceId" = :workspace_id)
    ORDER BY "workspaceId", lower(email)
    """
).bindparams(bindparam("email", type_=Text), bindparam("workspace_id", type_=Text))


@dataclass(frozen=True)
class StoredLogins:
    """A mailbox's SMTP and IMAP settings as stored, in the mailbox file's shape (unvalidated:
    the web app may have written the row)."""

    workspace_id: str
    email: str
    status: MailboxStatus
    smtp: dict[str, object]
    imap: dict[str, object] | None


def read_mailbox_logins(
    session: Session, *, email: str | None = None, workspace_id: str | None = None
) -> list[StoredLogins]:
    """The logins of one address's mailboxes, or every mailbox, optionally in one workspace."""
    answer = session.execute(LOGINS, {"email": email, "workspace_id": workspace_id})
    return [
        StoredLogins(
            workspace_id=row.workspaceId,
            email=row.email,
            status=MailboxStatus(row.status),
            smtp=row.smtp,
            imap=row.imap,
        )
        for row in answer
    ]


def launch_campaign(session: Session, campaign_id: str, *, now: datetime) -> CampaignStatus | None:
    """Make a draft or paused campaign active (its launch was approved); its status before, or
    None when there is no such id. Any other status is left alone."""
    before = _move_campaign(
        session, campaign_id, CampaignStatus.draft, CampaignStatus.active, None, now
    )
    if before is CampaignStatus.paused:
        return resume_campaign(session, campaign_id, now=now)
    return before
