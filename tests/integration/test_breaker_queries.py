"""Circuit breakers against real rows: what counts in a window, one pause per crossing, a resume
starting afresh, and the sweep over the last days' bounces and complaints."""

from datetime import timedelta

from sqlalchemy import text

from core.breakers import BreakerLines
from core.statuses import CampaignStatus, MailboxStatus
from db.base import utcnow
from db.models import Campaign, EngagementEvent, Mailbox
from db.queries.breakers import FIGURES, BreakerScope, trip_breakers
from db.queries.mailboxes import pause_mailbox, resume_campaign, resume_mailbox
from tests import factories

NOW = utcnow()
ALEX = "alex@seller.example"
LINES = BreakerLines()


class Storm:
    """A campaign sending from one mailbox row, and a way to add its handed-over sends."""

    def __init__(self, sessions, *, rules: dict | None = None, mailbox: str = ALEX) -> None:
        self.sessions = sessions
        with sessions.begin() as session:
            self.ws = factories.workspace(session)
            camp = factories.campaign(session, self.ws, steps=1, sendingRules=rules or {})
            self.campaign_id = camp.id
            self.mailbox_id = factories.mailbox(session, self.ws.id, mailbox).id
        self.mailbox = mailbox
        self.n = 0

    def sends(self, count: int, *, at=NOW - timedelta(hours=1), **events: int) -> list[str]:
        """`count` handed-over sends at `at`; the first ones get `hard`, `soft`, `complaint`
        events (in that order, one each), recorded `recorded` after `at` (default 10 minutes)."""
        recorded = events.pop("recorded", None)
        ids = []
        with self.sessions.begin() as session:
            camp = session.get(Campaign, self.campaign_id)
            for _ in range(count):
                lead = factories.lead(session, self.ws, email=f"lead{self.n}@buyer.example")
                self.n += 1
                send = factories.scheduled_send(
                    session, camp, lead, status="sent", mailbox=self.mailbox.lower(), attemptedAt=at
                )
                ids.append(send.id)
            kinds = [("bounce", {"bounceKind": "hard"})] * events.get("hard", 0)
            kinds += [("bounce", {"bounceKind": "soft"})] * events.get("soft", 0)
            kinds += [("complaint", {})] * events.get("complaint", 0)
            for send_id, (kind, metadata) in zip(ids, kinds, strict=False):
                session.add(
                    EngagementEvent(
                        emailSendId=send_id,
                        type=kind,
                        occurredAt=at + timedelta(minutes=5),
                        eventMetadata=metadata,
                        createdAt=recorded or at + timedelta(minutes=10),
                    )
                )
        return ids

    def trip(self, now=NOW, **where):
        where = where or {"mailbox_ids": [self.mailbox_id], "campaign_ids": [self.campaign_id]}
        with self.sessions.begin() as session:
            return trip_breakers(session, now=now, mailbox_lines=LINES, **where)

    def rows(self) -> tuple[Mailbox, Campaign]:
        with self.sessions() as session:
            return session.get(Mailbox, self.mailbox_id), session.get(Campaign, self.campaign_id)


def test_the_mailbox_and_campaign_pause_once_at_the_line_with_the_figures(sessions):
    storm = Storm(sessions)
    storm.sends(49, hard=5, soft=3)
    assert storm.trip() == []  # 10% hard bounces, but 49 sends are not yet a sample
    storm.sends(1)
    trips = storm.trip()

    reason = "hard bounces 5 of 50 sends (10.0%) in 7 days ≥ 3%"
    assert [(t.scope, t.reason) for t in trips] == [
        (BreakerScope.mailbox, reason),
        (BreakerScope.campaign, reason),
    ]
    assert (trips[0].id, trips[0].name, trips[0].health.sends) == (storm.mailbox_id, ALEX, 50)
    mailbox, campaign = storm.rows()
    assert (mailbox.status, mailbox.statusReason, mailbox.statusChangedAt) == (
        "paused",
        reason,
        NOW,
    )
    assert (campaign.status, campaign.statusReason, campaign.statusChangedAt) == (
        "paused",
        reason,
        NOW,
    )
    assert storm.trip() == []  # already paused: no second pause, no second event


def test_a_resume_starts_a_fresh_window(sessions):
    storm = Storm(sessions)
    old = storm.sends(50, hard=5)
    assert len(storm.trip()) == 2
    resumed = NOW + timedelta(minutes=1)
    with sessions.begin() as session:
        assert resume_mailbox(session, storm.mailbox_id, now=resumed) is MailboxStatus.paused
        assert resume_campaign(session, storm.campaign_id, now=resumed) is CampaignStatus.paused
    assert storm.rows()[1].statusReason is None
    later = resumed + timedelta(hours=1)
    # The same figures no longer count, nor do complaints that arrive now about the old sends.
    with sessions.begin() as session:
        for send_id in old[10:13]:
            session.add(EngagementEvent(emailSendId=send_id, type="complaint", occurredAt=later))
    assert storm.trip(later, sweep=True) == []
    storm.sends(49, at=resumed + timedelta(minutes=5), hard=1)
    assert storm.trip(later) == []
    # The window since the resume: its own sends only, and the reason says where it began.
    storm.sends(1, at=resumed + timedelta(minutes=6), hard=1)
    trips = storm.trip(later)
    assert trips and trips[0].reason == (
        f"hard bounces 2 of 50 sends (4.0%) since {resumed:%Y-%m-%d %H:%M} UTC ≥ 3%"
    )
    assert trips[0].since == resumed


def test_complaints_trip_at_the_floor_and_a_campaigns_own_lines(sessions):
    storm = Storm(sessions, rules={"fromEmail": ALEX, "protection": {"maxComplaints": 1}})
    storm.sends(10, complaint=1)
    (trip,) = storm.trip()  # the campaign's floor is 1; the mailbox's is still 3
    assert trip.scope is BreakerScope.campaign
    assert trip.reason == "complaints 1 of 10 sends (10.0%) in 7 days ≥ max(1, 0.1%)"
    assert trip.lines == BreakerLines(max_complaints=1)
    storm.sends(1, complaint=1)
    assert storm.trip() == []
    storm.sends(1, complaint=1)
    (trip,) = storm.trip()
    assert (trip.scope, trip.reason) == (
        BreakerScope.mailbox,
        "complaints 3 of 12 sends (25.0%) in 7 days ≥ max(3, 0.1%)",
    )


def test_the_sweep_weighs_rows_with_recent_events_and_keeps_an_operators_pause(sessions):
    storm = Storm(sessions)
    storm.sends(50, hard=5)
    paused = Storm(sessions, mailbox="bob@seller.example")
    paused.sends(50, hard=5)
    with sessions.begin() as session:
        pause_mailbox(session, paused.mailbox_id, reason="warming up again", now=NOW)
    # Over the line 8 days ago: outside the window, and its events too old to be swept.
    stale = Storm(sessions, mailbox="carol@seller.example")
    eight_days = NOW - timedelta(days=8)
    stale.sends(50, at=eight_days, hard=5, recorded=eight_days)

    trips = {(t.scope, t.id) for t in storm.trip(sweep=True)}

    assert trips == {
        (BreakerScope.mailbox, storm.mailbox_id),
        (BreakerScope.campaign, storm.campaign_id),
        (BreakerScope.campaign, paused.campaign_id),
    }
    assert paused.rows()[0].statusReason == "warming up again"
    assert stale.rows()[0].status == "active" and stale.rows()[1].status == "active"


def test_the_sweep_finds_its_events_through_their_partial_index(sessions):
    """The sweep runs before every delivery claim: opens, clicks and old events cost it nothing."""
    Storm(sessions).sends(3, hard=1, complaint=1)
    params = {
        "since": NOW - timedelta(days=7),
        "sweep": True,
        "mailbox_ids": [],
        "campaign_ids": [],
    }
    with sessions() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = session.execute(text("EXPLAIN " + str(FIGURES)), params).scalars()
        assert "EngagementEvent_breaker_idx" in "\n".join(plan)
