"""Reconciling on PostgreSQL: the unknown sends with their mailbox's IMAP, and fenced verdicts."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from core.delivery.reconcile import Outcome, UnknownHandover, reconcile
from db.models import Campaign, EmailSend, Workspace
from db.queries.reconcile import UNKNOWN_SENDS, read_unknown_sends, settle_unknown_sends
from tests import factories

HANDOVER = datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=UTC)
NOW = HANDOVER + timedelta(hours=1)
GRACE = timedelta(seconds=900)


def seed(sessions, *, mailbox_row=True, imap=True, address="Alex@Seller.example"):
    """One `unknown` send from alex@seller.example, and its Mailbox row as asked."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws)
        lead = factories.lead(session, ws, email="lead@buyer.example")
        send = factories.scheduled_send(
            session,
            camp,
            lead,
            status="unknown",
            mailbox=address,
            providerMessageId="<s1@seller.example>",
            attemptedAt=HANDOVER,
            claimToken="dead-worker",
            claimedBy="flow-run/dead",
            claimedUntil=HANDOVER,
            attempts=1,
        )
        if mailbox_row:
            factories.mailbox(
                session, ws.id, "alex@seller.example", imap_port=993 if imap else None
            )
        return send.id, camp.id


def only(sessions):
    with sessions() as session:
        [row] = read_unknown_sends(session, limit=10)
        return row


def test_an_unknown_send_comes_with_its_mailboxs_imap_login_matched_in_any_case(sessions):
    send_id, campaign_id = seed(sessions)
    row = only(sessions)
    assert (row.send_id, row.campaign_id, row.mailbox_id is not None) == (
        send_id,
        campaign_id,
        True,
    )
    assert row.imap == {
        "host": "127.0.0.1",
        "port": 993,
        "ssl": False,
        "username": "alex@seller.example",
        "password": "env:TEST_IMAP_PASSWORD",
        "folder": "INBOX",
    }
    assert row.send == UnknownHandover(
        send_id=send_id,
        campaign_id=campaign_id,
        mailbox="Alex@Seller.example",
        message_id="<s1@seller.example>",
        attempted_at=HANDOVER,
        claim_token="dead-worker",
        witness=None,
    )


def test_the_witness_is_the_mailboxs_latest_send_accepted_before_the_handover(sessions):
    _send_id, campaign_id = seed(sessions)
    with sessions.begin() as session:
        camp = session.get(Campaign, campaign_id)
        workspace = session.get(Workspace, camp.workspaceId) if camp else None
        assert camp is not None and workspace is not None
        for minutes, status, message_id in [
            (-30, "sent", "<older@seller.example>"),
            (-10, "sent", "<latest@seller.example>"),
            (-5, "failed", "<refused@seller.example>"),
            (5, "sent", "<after@seller.example>"),
        ]:
            factories.scheduled_send(
                session,
                camp,
                factories.lead(session, workspace),
                status=status,
                mailbox="Alex@Seller.example",
                providerMessageId=message_id,
                attemptedAt=HANDOVER + timedelta(minutes=minutes),
            )
    row = only(sessions)
    assert row.send is not None and row.send.witness == "<latest@seller.example>"


def test_without_a_row_or_without_imap_the_send_comes_without_a_login(sessions):
    seed(sessions, mailbox_row=False)
    assert (only(sessions).mailbox_id, only(sessions).imap) == (None, None)


def test_a_mailbox_without_imap_gives_no_login(sessions):
    seed(sessions, imap=False)
    row = only(sessions)
    assert row.mailbox_id is not None and row.imap is None


def _verdict(sessions, found_at):
    row = only(sessions)
    assert row.send is not None
    return reconcile(row.send, found_at, witness_filed=None, folder="Sent", now=NOW, grace=GRACE)


def _send(sessions, send_id) -> EmailSend:
    with sessions() as session:
        return session.scalars(select(EmailSend).where(EmailSend.id == send_id)).one()


def test_found_becomes_sent_at_the_filed_time_and_releases_the_claim(sessions):
    send_id, _ = seed(sessions)
    filed = HANDOVER + timedelta(seconds=2)
    verdict = _verdict(sessions, filed)
    with sessions.begin() as session:
        assert settle_unknown_sends(session, [verdict], now=NOW) == {send_id}
    row = _send(sessions, send_id)
    assert (row.status, row.sentAt, row.claimToken, row.claimedUntil) == ("sent", filed, None, None)
    assert row.attemptedAt == HANDOVER and row.providerMessageId == "<s1@seller.example>"


def test_absent_becomes_scheduled_again_with_the_same_message_id(sessions):
    send_id, _ = seed(sessions)
    verdict = _verdict(sessions, None)
    assert verdict.outcome is Outcome.rescheduled
    with sessions.begin() as session:
        assert settle_unknown_sends(session, [verdict], now=NOW) == {send_id}
    row = _send(sessions, send_id)
    assert (row.status, row.sentAt, row.attemptedAt, row.claimToken) == (
        "scheduled",
        None,
        None,
        None,
    )
    assert row.providerMessageId == "<s1@seller.example>"
    assert row.statusReason is not None and "same Message-ID" in row.statusReason


def test_two_overlapping_reconcilers_settle_a_send_once(sessions):
    send_id, _ = seed(sessions)
    first, second = _verdict(sessions, HANDOVER), _verdict(sessions, None)
    with sessions.begin() as session:
        assert settle_unknown_sends(session, [first], now=NOW) == {send_id}
    with sessions.begin() as session:
        assert settle_unknown_sends(session, [second], now=NOW) == set()
    assert _send(sessions, send_id).status == "sent"


def test_a_stale_verdict_never_settles_a_later_handover_of_the_same_send(sessions):
    """Scheduled again, handed over again and cut short again: the old verdict writes nothing."""
    send_id, _ = seed(sessions)
    stale = _verdict(sessions, None)
    with sessions.begin() as session:
        row = session.get(EmailSend, send_id)
        assert row is not None
        row.attemptedAt, row.claimToken = NOW, "next-worker"
    with sessions.begin() as session:
        assert settle_unknown_sends(session, [stale], now=NOW) == set()
    row = _send(sessions, send_id)
    assert (row.status, row.claimToken) == ("unknown", "next-worker")


def test_nothing_to_settle_writes_nothing(sessions):
    with sessions.begin() as session:
        assert settle_unknown_sends(session, [], now=NOW) == set()


def test_the_unknown_sends_are_found_through_their_partial_index(sessions):
    """The query can use `EmailSend_unknown_idx`, so sent history costs a run nothing."""
    seed(sessions)
    with sessions() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = session.execute(text("EXPLAIN " + str(UNKNOWN_SENDS)), {"limit": 10}).scalars()
        assert "EmailSend_unknown_idx" in "\n".join(plan)
