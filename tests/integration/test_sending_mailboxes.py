"""The mailbox rows delivery sends through, on PostgreSQL: found by workspace and address in any
case, disconnected only when active, and a send given back untried loses its attempt."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.mailboxes.mailbox_file import parse_mailbox_file
from core.statuses import EmailSendStatus, MailboxStatus
from db.base import utcnow
from db.models import EmailSend, Mailbox
from db.queries.delivery import ResultRow, hand_over_group, record_results, usage_today
from db.queries.mailboxes import add_mailboxes, pause_mailbox
from db.queries.sending_mailboxes import disconnect_mailbox, read_sending_mailboxes
from tests import factories
from tests.integration.test_handover_guard import DAY, MAILBOX, guard, seed

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)


def entry(email: str, password: str = "env:ALEX_SMTP_PASSWORD") -> dict:
    smtp = {"host": "smtp.example", "port": 465, "security": "ssl", "username": "alex"}
    return {"email": email, "smtp": smtp | {"password": password}, "warmup": {"start": 7}}


def add(session, workspace_id: str, *entries: dict) -> None:
    document = parse_mailbox_file({"workspaceId": workspace_id, "mailboxes": list(entries)})
    add_mailboxes(session, document, now=NOW)


def test_rows_are_found_by_workspace_and_address_in_any_case(sessions):
    with sessions.begin() as session:
        ws, other = factories.workspace(session), factories.workspace(session)
        add(session, ws.id, entry("Alex@Seller.example"), entry("sam@seller.example"))
        add(session, other.id, entry("alex@seller.example", "prefect-secret:other-alex"))
        found = read_sending_mailboxes(
            session, {(ws.id, "alex@seller.example"), (ws.id, "nobody@seller.example")}
        )
        assert read_sending_mailboxes(session, set()) == []
    (alex,) = found
    assert (alex.workspace_id, alex.email, alex.status) == (ws.id, "Alex@seller.example", "active")
    assert alex.smtp == {
        "host": "smtp.example",
        "port": 465,
        "security": "ssl",
        "username": "alex",
        "password": "env:ALEX_SMTP_PASSWORD",
    }
    assert alex.warmup.cap(NOW) == 7 and alex.warmup.cap(NOW + timedelta(days=2)) == 13


def test_only_an_active_mailbox_is_disconnected(sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        add(session, ws.id, entry("alex@seller.example"), entry("sam@seller.example"))
        rows = {m.email: m for m in session.scalars(select(Mailbox))}
        pause_mailbox(session, rows["sam@seller.example"].id, reason="by hand", now=NOW)
        reason = "535 5.7.8 Authentication credentials invalid"
        assert disconnect_mailbox(session, rows["alex@seller.example"].id, reason=reason, now=NOW)
        assert not disconnect_mailbox(session, rows["sam@seller.example"].id, reason="x", now=NOW)
    with sessions() as session:
        states = {m.email: (m.status, m.statusReason) for m in session.scalars(select(Mailbox))}
    assert states == {
        "alex@seller.example": (MailboxStatus.disconnected, reason),
        "sam@seller.example": (MailboxStatus.paused, "by hand"),
    }


def test_a_send_given_back_untried_loses_its_attempt(engine, sessions):
    token, campaign_id, ids = seed(sessions, 2)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
        assert handed == set(ids)
        tried, untried = ids
        at = utcnow() + timedelta(hours=1)
        written = record_results(
            connection,
            token=token,
            now=utcnow(),
            results=[
                ResultRow(tried, EmailSendStatus.scheduled, "mailbox disconnected: x", at),
                ResultRow(untried, EmailSendStatus.scheduled, "mailbox disconnected: x", at, True),
            ],
        )
    assert written == set(ids)
    with sessions() as session:
        rows = {s.id: s for s in session.scalars(select(EmailSend))}
    assert (rows[tried].status, rows[tried].attempts) == ("scheduled", 1)
    assert (rows[untried].status, rows[untried].attempts) == ("scheduled", 0)
    assert rows[untried].scheduledFor == at.replace(microsecond=at.microsecond // 1000 * 1000)
