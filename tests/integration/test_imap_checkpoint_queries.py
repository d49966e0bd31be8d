"""IMAP checkpoint queries on PostgreSQL: which mailboxes ingestion reads, and how far it got."""

from datetime import UTC, datetime

from sqlalchemy import select

from core.engagement.inbound_sources import IMAPCheckpoint
from core.mailboxes.mailbox_file import parse_mailbox_file
from core.statuses import MailboxStatus
from db.models import Mailbox
from db.queries.imap_checkpoints import read_imap_mailboxes, save_imap_checkpoint
from db.queries.mailboxes import add_mailboxes, pause_mailbox
from tests import factories

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)


def _entry(email: str, *, imap: bool = True, folder: str = "INBOX") -> dict[str, object]:
    entry: dict[str, object] = {
        "email": email,
        "smtp": {"host": "smtp.example", "username": email, "password": "env:SMTP_PW"},
    }
    if imap:
        entry["imap"] = {
            "host": "imap.example",
            "port": 143,
            "ssl": False,
            "username": email,
            "password": "env:IMAP_PW",
            "folder": folder,
        }
    return entry


def _add(session, workspace_id: str, *entries: dict[str, object]) -> None:
    document = parse_mailbox_file({"workspaceId": workspace_id, "mailboxes": list(entries)})
    add_mailboxes(session, document, now=NOW)


def _checkpoint(session, email: str) -> tuple[int | None, int | None]:
    row = session.scalars(select(Mailbox).where(Mailbox.email == email)).one()
    session.refresh(row)
    return row.imapUidValidity, row.imapLastUid


def test_only_active_mailboxes_with_imap_are_read_in_the_file_shape(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        _add(
            session,
            ws.id,
            _entry("b@acme.example"),
            _entry("a@acme.example"),
            _entry("noimap@acme.example", imap=False),
            _entry("paused@acme.example"),
        )
        paused = session.scalars(select(Mailbox).where(Mailbox.email == "paused@acme.example"))
        pause_mailbox(session, paused.one().id, reason="bounces", now=NOW)
        inboxes = read_imap_mailboxes(session)
    # A paused mailbox is still read: its replies must stop their leads before it sends again.
    assert [inbox.email for inbox in inboxes] == [
        "a@acme.example",
        "b@acme.example",
        "paused@acme.example",
    ]
    assert inboxes[0].imap == {
        "host": "imap.example",
        "port": 143,
        "ssl": False,
        "username": "a@acme.example",
        "password": "env:IMAP_PW",
        "folder": "INBOX",
    }
    assert inboxes[0].checkpoint is None and inboxes[0].workspace_id == ws.id


def test_a_checkpoint_is_saved_kept_at_the_highest_uid_and_replaced_on_a_new_uidvalidity(
    sessions,
):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        _add(session, ws.id, _entry("a@acme.example"))
        [inbox] = read_imap_mailboxes(session)
        assert save_imap_checkpoint(session, inbox, IMAPCheckpoint(7, 42))
        assert _checkpoint(session, "a@acme.example") == (7, 42)
        # A slower run that read less does not move it back.
        assert save_imap_checkpoint(session, inbox, IMAPCheckpoint(7, 40))
        assert _checkpoint(session, "a@acme.example") == (7, 42)
        assert save_imap_checkpoint(session, inbox, IMAPCheckpoint(8, 3))
        assert _checkpoint(session, "a@acme.example") == (8, 3)
        [again] = read_imap_mailboxes(session)
        assert again.checkpoint == IMAPCheckpoint(8, 3)


def test_a_checkpoint_for_a_folder_that_changed_meanwhile_is_not_saved(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        _add(session, ws.id, _entry("a@acme.example"))
        [inbox] = read_imap_mailboxes(session)
        _add(session, ws.id, _entry("a@acme.example", folder="Replies"))
        assert not save_imap_checkpoint(session, inbox, IMAPCheckpoint(7, 42))
        assert _checkpoint(session, "a@acme.example") == (None, None)
        row = session.scalars(select(Mailbox)).one()
        assert MailboxStatus(row.status) is MailboxStatus.active
