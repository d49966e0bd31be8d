"""The handover guard against real rows: caps from the day's counters, slot order, refusals."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core.delivery.lane import HandoverGuard
from core.statuses import EmailSendStatus
from db.base import utcnow
from db.models import (
    Campaign,
    CampaignLead,
    DeliveryCounter,
    EmailSend,
    GeneratedMessage,
    Mailbox,
)
from db.queries.delivery import (
    CampaignRoom,
    ResultRow,
    claim_due_sends,
    hand_over_group,
    release_campaign_room,
    reserve_campaign_room,
    usage_today,
)
from tests import factories

DAY = datetime(2026, 11, 26, tzinfo=UTC)
MAILBOX = "alex@seller.example"


def seed(sessions, sends: int) -> tuple[str, str, list[str]]:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws)
        for i in range(sends):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            factories.scheduled_send(
                session, camp, lead, scheduled_for=utcnow() - timedelta(minutes=10 - i)
            )
        campaign_id = camp.id
    with sessions.begin() as session:
        token, due = claim_due_sends(
            session, cutoff=utcnow(), now=utcnow(), limit=100, worker="t", lease=timedelta(60)
        )
    return token, campaign_id, [s.sendId for s in due]


def guard(campaign_id: str, send_ids: list[str], *, campaign_limit: int = 100) -> HandoverGuard:
    return HandoverGuard(
        campaign_id=campaign_id,
        mailbox=MAILBOX,
        sends=tuple((i, f"<{i}@seller.example>") for i in send_ids),
        day=DAY,
        mailbox_limit=100,
        campaign_limit=campaign_limit,
        min_gap=timedelta(0),
    )


def test_a_group_takes_the_room_left_in_slot_order_and_counts_it(engine, sessions):
    token, campaign_id, ids = seed(sessions, 4)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids, campaign_limit=2),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
    assert handed == set(ids[:2])
    with sessions() as session:
        status = dict(session.execute(select(EmailSend.id, EmailSend.status)).all())
        used = {c.scope: c.used for c in session.scalars(select(DeliveryCounter))}
    assert [status[i] for i in ids] == ["sending", "sending", "scheduled", "scheduled"]
    assert used == {"campaign": 2, "mailbox": 2}


def test_a_stopped_lead_is_refused_and_takes_no_room(engine, sessions):
    token, campaign_id, ids = seed(sessions, 3)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
        stopped = session.get(EmailSend, ids[0])
        session.execute(
            update(CampaignLead)
            .where(CampaignLead.leadId == stopped.leadId)
            .values(status="replied")
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids, campaign_limit=2),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
    assert handed == set(ids[1:])
    with sessions() as session:
        assert {c.scope: c.used for c in session.scalars(select(DeliveryCounter))} == {
            "campaign": 2,
            "mailbox": 2,
        }


def test_a_paused_mailbox_row_is_refused_and_takes_no_room(engine, sessions):
    token, campaign_id, ids = seed(sessions, 2)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
        workspace_id = session.get(Campaign, campaign_id).workspaceId
        row = factories.mailbox(session, workspace_id, "Alex@Seller.example")
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids[:1]),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
        assert handed == {ids[0]}
        # A circuit breaker (another lane, another run) pauses the mailbox after the plan.
        connection.execute(update(Mailbox).where(Mailbox.id == row.id).values(status="paused"))
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids[1:]),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
    assert handed == set()
    with sessions() as session:
        status = dict(session.execute(select(EmailSend.id, EmailSend.status)).all())
        used = {c.scope: c.used for c in session.scalars(select(DeliveryCounter))}
    assert [status[i] for i in ids] == ["sending", "scheduled"]
    assert used == {"campaign": 1, "mailbox": 1}


def test_without_the_days_counters_nothing_is_handed_over_but_results_are_written(engine, sessions):
    token, campaign_id, ids = seed(sessions, 2)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids[:1]),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
        assert handed == {ids[0]}
        next_day = HandoverGuard(
            **(guard(campaign_id, ids[1:]).__dict__ | {"day": DAY + timedelta(1)})
        )
        written, handed = hand_over_group(
            connection,
            next_day,
            results=[ResultRow(ids[0], EmailSendStatus.sent)],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
    assert (written, handed) == ({ids[0]}, set())
    with sessions() as session:
        status = dict(session.execute(select(EmailSend.id, EmailSend.status)).all())
    assert [status[i] for i in ids] == ["sent", "scheduled"]


def counters(sessions) -> dict[str, int]:
    with sessions() as session:
        return {c.scope: c.used for c in session.scalars(select(DeliveryCounter))}


def test_reserved_room_is_taken_under_the_cap_and_spent_without_the_campaigns_counter(
    engine, sessions
):
    token, campaign_id, ids = seed(sessions, 3)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        granted = reserve_campaign_room(
            connection,
            [
                CampaignRoom(campaign_id, DAY, 3, limit=2),
                CampaignRoom(campaign_id, DAY + timedelta(1), 1, limit=5),  # no counter row yet
            ],
        )
        assert granted == [2, 0]
        assert counters(sessions) == {"campaign": 2, "mailbox": 0}
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids[:2], campaign_limit=2),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
            campaign_reserved=2,
        )
        assert handed == set(ids[:2])
        assert counters(sessions) == {"campaign": 2, "mailbox": 2}
        # Another lane or run without a reservation finds the cap taken.
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids[2:], campaign_limit=2),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
        )
    assert handed == set()
    assert counters(sessions) == {"campaign": 2, "mailbox": 2}


def test_a_group_takes_no_more_than_the_reserved_room_and_the_rest_goes_back(engine, sessions):
    token, campaign_id, ids = seed(sessions, 3)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        assert reserve_campaign_room(connection, [CampaignRoom(campaign_id, DAY, 5, 100)]) == [5]
        _, handed = hand_over_group(
            connection,
            guard(campaign_id, ids),
            results=[],
            token=token,
            now=utcnow(),
            lease=timedelta(60),
            campaign_reserved=1,
        )
        assert handed == {ids[0]}
        release_campaign_room(connection, [CampaignRoom(campaign_id, DAY, 4)])
    assert counters(sessions) == {"campaign": 1, "mailbox": 1}


def test_a_message_pending_review_or_rejected_is_refused_and_takes_no_room(engine, sessions):
    token, campaign_id, ids = seed(sessions, 3)
    with sessions.begin() as session:
        usage_today(session, campaigns={campaign_id: DAY}, mailboxes={MAILBOX: DAY})
        # Put back into review and rejected in the web app after delivery claimed the sends.
        for send_id, status in zip(ids, ["pending_review", "rejected"], strict=False):
            message_id = session.get(EmailSend, send_id).generatedMessageId
            session.execute(
                update(GeneratedMessage)
                .where(GeneratedMessage.id == message_id)
                .values(status=status)
            )
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
    assert handed == {ids[2]}
    with sessions() as session:
        status = dict(session.execute(select(EmailSend.id, EmailSend.status)).all())
    assert [status[i] for i in ids] == ["scheduled", "scheduled", "sending"]
    assert counters(sessions) == {"campaign": 1, "mailbox": 1}
