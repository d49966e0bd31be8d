"""Mailboxes on PostgreSQL: adding a file twice, listing with health, pausing and resuming."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core.mailboxes.mailbox_file import parse_mailbox_file
from core.statuses import CampaignStatus, MailboxStatus
from db.base import new_id
from db.models import Campaign, EngagementEvent, Mailbox, Workspace
from db.queries.mailboxes import (
    UnknownWorkspaceError,
    add_mailboxes,
    find_mailboxes,
    list_mailboxes,
    pause_campaign,
    pause_mailbox,
    resume_campaign,
    resume_mailbox,
)
from tests import factories

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)


def _entry(email, **overrides):
    entry = {
        "email": email,
        "name": "Alex Doe",
        "smtp": {
            "host": "smtp.example",
            "username": email,
            "password": "env:ALEX_SMTP_PASSWORD",
        },
        "imap": {"host": "imap.example", "username": email, "password": "env:ALEX_IMAP"},
    }
    entry.update(overrides)
    return entry


def _file(workspace_id, *entries):
    return parse_mailbox_file({"workspaceId": workspace_id, "mailboxes": list(entries)})


def _row(session, email):
    return session.scalars(select(Mailbox).where(Mailbox.email == email)).one()


def test_add_creates_then_updates_by_address_in_any_case(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        added = add_mailboxes(session, _file(ws.id, _entry("alex@acme.example")), now=NOW)
        assert (added.created, added.updated) == (["alex@acme.example"], [])
        row = _row(session, "alex@acme.example")
        assert row.warmupStartedAt == datetime(2026, 12, 4, tzinfo=UTC)
        assert (row.dailyLimit, row.warmupStart, row.warmupIncrement) == (40, 5, 3)
        assert (row.smtpPasswordRef, row.imapPasswordRef) == (
            "env:ALEX_SMTP_PASSWORD",
            "env:ALEX_IMAP",
        )
        assert (row.smtpPort, row.smtpSecurity, row.imapFolder, row.status) == (
            587,
            "starttls",
            "INBOX",
            "active",
        )
        session.execute(update(Mailbox).values(imapUidValidity=7, imapLastUid=42))

    later = NOW + timedelta(days=3)
    changed = _entry("Alex@ACME.example", dailyLimit=25, name="Alex")
    changed["smtp"]["port"] = 465
    changed["smtp"]["security"] = "ssl"
    changed["imap"]["username"] = "alex@acme.example"
    with sessions.begin() as session:
        added = add_mailboxes(session, _file(ws.id, changed, _entry("sam@acme.example")), now=later)
        assert (added.created, added.updated) == (["sam@acme.example"], ["Alex@acme.example"])
        [row] = session.scalars(select(Mailbox).where(Mailbox.name == "Alex")).all()
        # Same folder: the checkpoint is kept; the warm-up keeps the day it was first added.
        assert (row.dailyLimit, row.smtpPort, row.smtpSecurity) == (25, 465, "ssl")
        assert (row.imapUidValidity, row.imapLastUid) == (7, 42)
        assert row.warmupStartedAt == datetime(2026, 12, 4, tzinfo=UTC)
        assert session.query(Mailbox).count() == 2


def test_update_drops_the_imap_checkpoint_when_the_folder_changes(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        add_mailboxes(session, _file(ws.id, _entry("alex@acme.example")), now=NOW)
        session.execute(update(Mailbox).values(imapUidValidity=7, imapLastUid=42))
        moved = _entry("alex@acme.example")
        moved["imap"]["folder"] = "Replies"
        add_mailboxes(session, _file(ws.id, moved), now=NOW)
        row = _row(session, "alex@acme.example")
        assert (row.imapFolder, row.imapUidValidity, row.imapLastUid) == ("Replies", None, None)
        add_mailboxes(session, _file(ws.id, _entry("alex@acme.example", imap=None)), now=NOW)
        session.refresh(row)
        assert (row.imapHost, row.imapPasswordRef, row.imapFolder) == (None, None, None)


def test_a_given_warmup_start_wins_on_create_and_update(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        add_mailboxes(session, _file(ws.id, _entry("alex@acme.example")), now=NOW)
        entry = _entry("alex@acme.example", warmup={"startedAt": "2026-11-01", "increment": 2})
        add_mailboxes(session, _file(ws.id, entry), now=NOW)
        row = _row(session, "alex@acme.example")
        assert row.warmupStartedAt == datetime(2026, 11, 1, tzinfo=UTC)
        assert row.warmupIncrement == 2


def test_the_same_address_in_two_workspaces_is_two_mailboxes(sessions):
    with sessions.begin() as session:
        one, two = factories.workspace(session), factories.workspace(session)
        add_mailboxes(session, _file(one.id, _entry("alex@acme.example")), now=NOW)
        add_mailboxes(session, _file(two.id, _entry("alex@acme.example")), now=NOW)
        assert len(find_mailboxes(session, "ALEX@acme.example")) == 2
        [found] = find_mailboxes(session, "alex@acme.example", workspace_id=two.id)
        assert (found.workspace_id, found.status) == (two.id, MailboxStatus.active)
        assert find_mailboxes(session, "nobody@acme.example") == []


def test_an_unknown_workspace_is_refused(sessions):
    with sessions.begin() as session, pytest.raises(UnknownWorkspaceError, match="ws_missing"):
        add_mailboxes(session, _file("ws_missing", _entry("alex@acme.example")), now=NOW)


def _send(session, camp, mailbox, *, at, status="sent"):
    lead = factories.lead(session, session.get(Workspace, camp.workspaceId))
    return factories.scheduled_send(
        session,
        camp,
        lead,
        status=status,
        mailbox=mailbox,
        attemptedAt=at,
        sentAt=at if status == "sent" else None,
    )


def _event(session, send, type_, at, **metadata):
    session.add(
        EngagementEvent(
            emailSendId=send.id,
            type=type_,
            occurredAt=at,
            dedupeKey=new_id(),
            eventMetadata=metadata or None,
        )
    )
    session.flush()


def test_list_shows_status_cap_and_seven_day_rates(sessions):
    with sessions.begin() as session:
        ws, elsewhere = factories.workspace(session), factories.workspace(session)
        add_mailboxes(
            session,
            _file(ws.id, _entry("alex@acme.example"), _entry("sam@acme.example", imap=None)),
            now=NOW - timedelta(days=2),
        )
        camp = factories.campaign(session, ws, steps=1)
        recent = [
            _send(session, camp, "Alex@acme.example", at=NOW - timedelta(hours=h))
            for h in range(1, 9)
        ]
        refused = _send(
            session, camp, "alex@acme.example", at=NOW - timedelta(hours=1), status="failed"
        )
        _event(session, refused, "bounce", NOW - timedelta(hours=1))  # a 5xx at handover: no kind
        _event(session, recent[0], "bounce", NOW, bounceKind="hard")
        _event(session, recent[0], "bounce", NOW, bounceKind="hard")  # the same send twice
        _event(session, recent[1], "bounce", NOW, bounceKind="soft")
        _event(session, recent[2], "complaint", NOW)
        old = _send(session, camp, "alex@acme.example", at=NOW - timedelta(days=8))
        _event(session, old, "bounce", NOW - timedelta(days=8), bounceKind="hard")
        _send(session, camp, "alex@acme.example", at=NOW, status="scheduled")
        # The same address sending for another workspace's campaign is not this mailbox.
        other = factories.campaign(session, elsewhere, steps=1)
        _event(session, _send(session, other, "alex@acme.example", at=NOW), "complaint", NOW)
        pause_mailbox(session, _row(session, "sam@acme.example").id, reason="domain check", now=NOW)

        alex, sam = list_mailboxes(session, now=NOW, workspace_id=ws.id)
        assert (alex.email, alex.status, alex.has_imap) == (
            "alex@acme.example",
            MailboxStatus.active,
            True,
        )
        assert (alex.health.sends, alex.health.hard_bounces, alex.health.complaints) == (9, 2, 1)
        assert alex.health.hard_bounce_rate == pytest.approx(2 / 9)
        assert alex.warmup.cap(NOW) == 11  # third day of the ramp: 5 + 2 x 3
        assert (sam.status, sam.status_reason, sam.status_changed_at) == (
            MailboxStatus.paused,
            "domain check",
            NOW,
        )
        assert (sam.health.sends, sam.health.hard_bounce_rate, sam.has_imap) == (0, None, False)
        assert len(list_mailboxes(session, now=NOW)) == 2
        assert list_mailboxes(session, now=NOW, workspace_id=elsewhere.id) == []


def test_pause_and_resume_say_what_the_status_was(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        add_mailboxes(session, _file(ws.id, _entry("alex@acme.example")), now=NOW)
        row = _row(session, "alex@acme.example")
        assert pause_mailbox(session, row.id, reason="spam folder", now=NOW) is MailboxStatus.active
        later = NOW + timedelta(hours=1)
        assert (
            pause_mailbox(session, row.id, reason="spam folder", now=later) is MailboxStatus.paused
        )
        session.refresh(row)
        assert (row.status, row.statusReason, row.statusChangedAt) == ("paused", "spam folder", NOW)
        session.execute(update(Mailbox).values(status="disconnected", statusReason="535 bad login"))
        assert resume_mailbox(session, row.id, now=later) is MailboxStatus.disconnected
        session.refresh(row)
        assert (row.status, row.statusReason, row.statusChangedAt) == ("active", None, later)
        assert (
            resume_mailbox(session, row.id, now=later + timedelta(hours=1)) is MailboxStatus.active
        )
        session.refresh(row)
        assert row.statusChangedAt == later
        assert pause_mailbox(session, "no-such-id", reason="x", now=NOW) is None


def test_campaign_pause_and_resume_move_only_between_active_and_paused(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=1)
        draft = factories.campaign(session, ws, steps=1, status="draft")
        assert pause_campaign(session, camp.id, reason="list check", now=NOW) is (
            CampaignStatus.active
        )
        later = NOW + timedelta(hours=1)
        assert pause_campaign(session, camp.id, reason="again", now=later) is CampaignStatus.paused
        session.refresh(camp)
        assert (camp.status, camp.statusReason, camp.statusChangedAt) == (
            "paused",
            "list check",
            NOW,
        )
        assert resume_campaign(session, camp.id, now=later) is CampaignStatus.paused
        session.refresh(camp)
        # The resume's time is where the campaign's circuit breaker starts counting again.
        assert (camp.status, camp.statusReason, camp.statusChangedAt) == ("active", None, later)
        assert resume_campaign(session, draft.id, now=NOW) is CampaignStatus.draft
        assert pause_campaign(session, draft.id, now=NOW) is CampaignStatus.draft
        assert session.scalar(select(Campaign.status).where(Campaign.id == draft.id)) == "draft"
        assert resume_campaign(session, "no-such-campaign", now=NOW) is None
