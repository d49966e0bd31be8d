"""The web app's queries on real PostgreSQL: a send's existence and recipient, the webhook inbox
insert, and the health check's round trip. None of them commits."""

from sqlalchemy import func, select

from db.models import EngagementInbox
from db.queries.engagement import store_inbox_payload
from db.queries.health import database_answers
from db.queries.unsubscribe import SendRecipient, send_exists, send_recipient
from tests import factories

ADDRESS = "Sarah.Jones@Example.com"


def seed_send(sessions) -> tuple[str, str]:
    """One send to ADDRESS; returns (send id, workspace id)."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        campaign = factories.campaign(session, ws)
        lead = factories.lead(session, ws, email=ADDRESS)
        factories.enrolment(session, campaign, lead)
        return factories.scheduled_send(session, campaign, lead).id, ws.id


def test_send_exists_only_for_a_known_send(sessions):
    send_id, _ = seed_send(sessions)
    with sessions() as session:
        assert send_exists(session, send_id)
        assert not send_exists(session, "no-such-send")


def test_send_recipient_is_the_workspace_and_the_address_as_written(sessions):
    send_id, workspace_id = seed_send(sessions)
    with sessions() as session:
        assert send_recipient(session, send_id) == SendRecipient(workspace_id, ADDRESS)
        assert send_recipient(session, "no-such-send") is None


def test_an_inbox_payload_is_stored_once_per_replay_key_and_not_committed(sessions):
    payload = [{"event": "open", "sg_event_id": "e1"}]
    with sessions() as session:
        first = store_inbox_payload(session, "sendgrid", payload, "key-1")
        assert first is not None
        assert store_inbox_payload(session, "sendgrid", payload, "key-1") is None
        assert store_inbox_payload(session, "mailgun", payload, "key-1") is not None
        # Postmark has no replay key: NULLs never conflict, so every post is stored.
        assert store_inbox_payload(session, "postmark", {}, None) is not None
        assert store_inbox_payload(session, "postmark", {}, None) is not None
        row = session.get(EngagementInbox, first)
        assert row is not None and row.payload == payload and row.processedAt is None
        session.rollback()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EngagementInbox)) == 0


def test_the_database_answers(sessions):
    with sessions() as session:
        database_answers(session)
