"""The campaign report's reads on PostgreSQL: a hand-built history, every number checked.

The window is February 2026. Campaign Alpha has two steps: four leads enrolled in February (one
exactly at `since`), a fifth in January whose step-2 email went out on February 1st; sends that
were accepted, refused at handover with a bounce, out of retries, and one still waiting; three
opens of one email. Beta used the template generator (no tokens): one email accepted, one
`unknown` handover that an open proves left, a reply after the window and an email sent exactly
at `until`. Gamma did everything in January.
"""

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from sqlalchemy import select

from core.analytics.campaign_report import ReportWindow, compute_campaign_report
from db.models import (
    Campaign,
    EmailSend,
    EngagementEvent,
    GeneratedMessage,
    ReplyClassification,
    SequenceStep,
)
from db.queries.report import read_report_inputs
from db.reporting import load_report
from tests import factories

SINCE = datetime(2026, 2, 1, tzinfo=UTC)
UNTIL = datetime(2026, 3, 1, tzinfo=UTC)


def at(day: int, hour: int = 9, minute: int = 0, second: int = 0, month: int = 2) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


class History:
    def __init__(self, session):
        self.session = session
        self.ws = factories.workspace(session)
        self.events = 0

    def campaign(self, name):
        camp = factories.campaign(self.session, self.ws, steps=2, name=name)
        steps = {
            s.stepOrder: s.id
            for s in self.session.query(SequenceStep).filter_by(campaignId=camp.id).all()
        }
        return camp, steps

    def enrol(self, camp, created):
        lead = factories.lead(self.session, self.ws)
        factories.enrolment(self.session, camp, lead, createdAt=created)
        return lead

    def message(self, camp, steps, lead, step, created, *, tokens=None, cost=None, **fields):
        row = GeneratedMessage(
            campaignId=camp.id,
            leadId=lead.id,
            stepId=steps[step],
            subject="Quick question",
            body="Hi there",
            createdAt=created,
            model="gpt-4o-mini" if tokens else "template",
            promptTokens=tokens[0] if tokens else None,
            completionTokens=tokens[1] if tokens else None,
            costUsd=Decimal(cost) if cost else None,
            **fields,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def send(self, camp, steps, lead, step, message, created, status, **fields):
        row = EmailSend(
            campaignId=camp.id,
            leadId=lead.id,
            stepId=steps[step],
            generatedMessageId=message.id,
            toEmail=lead.email,
            status=status,
            createdAt=created,
            **fields,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def event(self, send, type_, occurred):
        self.events += 1
        self.session.add(
            EngagementEvent(
                emailSendId=send.id,
                type=type_,
                occurredAt=occurred,
                dedupeKey=f"test:{self.events}",
                source="test",
            )
        )
        self.session.flush()

    def classify(self, send, intent):
        """Classify the send's reply as the reply flow does."""
        (reply,) = self.session.scalars(
            select(EngagementEvent).filter_by(emailSendId=send.id, type="reply")
        )
        self.session.add(
            ReplyClassification(
                engagementEventId=reply.id,
                intent=intent,
                confidence=0.9,
                summary="",
                method="llm",
                action="stopped",
            )
        )
        self.session.flush()


@pytest.fixture
def history(sessions):
    with sessions.begin() as session:
        h = History(session)
        alpha, a = h.campaign("Alpha")
        l1 = h.enrol(alpha, SINCE)  # exactly at since: in the window
        l2, l3, l4 = (h.enrol(alpha, at(day)) for day in (2, 3, 4))
        l5 = h.enrol(alpha, at(10, month=1))  # January

        # Step 1: four current messages and one superseded one (paid, not counted as generated).
        m = {
            lead.id: h.message(alpha, a, lead, 1, at(2, 8), tokens=(1000, 200), cost="0.0012")
            for lead in (l1, l2, l3, l4)
        }
        h.message(alpha, a, l1, 1, at(2, 7), tokens=(900, 150), cost="0.001", status="superseded")
        s1 = h.send(
            alpha, a, l1, 1, m[l1.id], at(2, 8), "sent", scheduledFor=at(2, 10), sentAt=at(2, 10, 1)
        )
        for minute in (5, 6, 7):  # three opens of one email: one unique open
            h.event(s1, "open", at(2, 11, minute))
        h.event(s1, "click", at(2, 11, 8))
        h.event(s1, "reply", at(3, 9))
        h.classify(s1, "meeting_request")
        s2 = h.send(
            alpha, a, l2, 1, m[l2.id], at(2, 8), "sent", scheduledFor=at(3), sentAt=at(3, 9, 10)
        )
        h.event(s2, "open", at(3, 12))
        h.event(s2, "unsubscribe", at(3, 13))
        h.event(s2, "click", at(2, 10, month=3))  # after until: not counted
        s3 = h.send(  # refused at handover (5xx for the recipient): a bounce, so it was sent
            alpha, a, l3, 1, m[l3.id], at(2, 8), "failed", scheduledFor=at(4), attemptedAt=at(4)
        )
        h.event(s3, "bounce", at(4))
        h.send(  # out of retries: failed, not sent
            alpha, a, l4, 1, m[l4.id], at(2, 8), "failed", scheduledFor=at(5), attemptedAt=at(5)
        )
        # Step 2: l1's message waits for March; l5's, written in January, left on February 1st.
        m12 = h.message(alpha, a, l1, 2, at(10), tokens=(1500, 300), cost="0.002")
        h.send(alpha, a, l1, 2, m12, at(10), "scheduled", scheduledFor=at(3, month=3))
        m51 = h.message(alpha, a, l5, 1, at(19, month=1), tokens=(5000, 900), cost="0.05")
        old = h.send(
            alpha, a, l5, 1, m51, at(19, month=1), "sent", sentAt=at(20, month=1),
            scheduledFor=at(20, month=1),
        )  # fmt: skip
        h.event(old, "open", at(2, 9))  # an event in the window of an email sent before it
        m52 = h.message(alpha, a, l5, 2, at(30, month=1), tokens=(5000, 900), cost="0.05")
        h.send(
            alpha, a, l5, 2, m52, at(30, month=1), "sent", scheduledFor=SINCE,
            sentAt=SINCE + timedelta(seconds=120),
        )  # fmt: skip

        beta, b = h.campaign("Beta")
        l6, l7 = h.enrol(beta, at(9)), h.enrol(beta, at(9))
        m6, m7 = h.message(beta, b, l6, 1, at(10)), h.message(beta, b, l7, 1, at(10))
        s6 = h.send(
            beta, b, l6, 1, m6, at(10), "sent", scheduledFor=at(10, 12), sentAt=at(10, 12, 0, 30)
        )
        h.event(s6, "open", at(10, 13))
        h.event(s6, "complaint", at(10, 14))
        h.event(s6, "reply", at(5, month=3))  # after until
        h.classify(s6, "interested")
        s7 = h.send(beta, b, l7, 1, m7, at(10), "unknown", scheduledFor=at(11), attemptedAt=at(11))
        h.event(s7, "open", at(12))
        m62 = h.message(beta, b, l6, 2, at(20))
        h.send(beta, b, l6, 2, m62, at(20), "sent", scheduledFor=at(28, 23), sentAt=UNTIL)

        gamma, g = h.campaign("Gamma")
        l8 = h.enrol(gamma, at(5, month=1))
        m8 = h.message(gamma, g, l8, 1, at(5, month=1), tokens=(1000, 100), cost="0.001")
        h.send(gamma, g, l8, 1, m8, at(5, month=1), "sent", sentAt=at(6, month=1))
        return {"alpha": alpha.id, "beta": beta.id, "gamma": gamma.id}


def report_for(sessions, **window):
    window = ReportWindow(since=SINCE, until=UNTIL, **window)
    with sessions() as session:
        inputs = read_report_inputs(session, window)
    return compute_campaign_report(inputs, window)


def by_key(frame):
    return {(r["campaign_name"], none(r["step"])): r for r in frame.to_dict("records")}


def none(value):
    """None for an empty cell (NA, NaN or None), else the value."""
    return None if pd.isna(value) else value


COUNTS = (
    "enrolled",
    "generated",
    "scheduled",
    "sent",
    "failed",
    "unique_opens",
    "unique_clicks",
    "replies",
    "positive_replies",
    "bounces",
    "unsubscribes",
    "complaints",
    "prompt_tokens",
    "completion_tokens",
)


def counts(row):
    return {name: none(row[name]) for name in COUNTS}


EXPECTED = {
    ("Alpha", 1): dict(
        enrolled=None, generated=4, scheduled=4, sent=3, failed=1, unique_opens=2,
        unique_clicks=1, replies=1, positive_replies=1,
        bounces=1, unsubscribes=1, complaints=0,
        prompt_tokens=4900, completion_tokens=950,
    ),
    ("Alpha", 2): dict(
        enrolled=None, generated=1, scheduled=1, sent=1, failed=0, unique_opens=0,
        unique_clicks=0, replies=0, positive_replies=0,
        bounces=0, unsubscribes=0, complaints=0,
        prompt_tokens=1500, completion_tokens=300,
    ),
    ("Beta", 1): dict(
        enrolled=None, generated=2, scheduled=2, sent=2, failed=0, unique_opens=2,
        unique_clicks=0, replies=0, positive_replies=0,
        bounces=0, unsubscribes=0, complaints=1,
        prompt_tokens=0, completion_tokens=0,
    ),
    ("Beta", 2): dict(
        enrolled=None, generated=1, scheduled=1, sent=0, failed=0, unique_opens=0,
        unique_clicks=0, replies=0, positive_replies=0,
        bounces=0, unsubscribes=0, complaints=0,
        prompt_tokens=0, completion_tokens=0,
    ),
    ("Alpha", None): dict(
        enrolled=4, generated=5, scheduled=5, sent=4, failed=1, unique_opens=2,
        unique_clicks=1, replies=1, positive_replies=1,
        bounces=1, unsubscribes=1, complaints=0,
        prompt_tokens=6400, completion_tokens=1250,
    ),
    ("Beta", None): dict(
        enrolled=2, generated=3, scheduled=3, sent=2, failed=0, unique_opens=2,
        unique_clicks=0, replies=0, positive_replies=0,
        bounces=0, unsubscribes=0, complaints=1,
        prompt_tokens=0, completion_tokens=0,
    ),
}  # fmt: skip


def test_every_count_of_every_step_and_campaign(sessions, history):
    report = report_for(sessions)
    rows = by_key(report.steps) | by_key(report.campaigns)
    assert set(rows) == set(EXPECTED)  # Gamma did nothing in February
    for key, expected in EXPECTED.items():
        assert counts(rows[key]) == expected, key


def test_rates_are_over_sent_and_spend_is_per_1000_generated(sessions, history):
    report = report_for(sessions)
    rows = by_key(report.steps) | by_key(report.campaigns)
    a1 = rows[("Alpha", 1)]
    for rate in ("open_rate", "click_rate", "reply_rate", "bounce_rate", "unsubscribe_rate"):
        expected = 2 / 3 if rate == "open_rate" else 1 / 3
        assert a1[rate] == pytest.approx(expected), rate
    assert a1["complaint_rate"] == 0
    # 4 x 0.0012 plus the superseded 0.001, over the 4 current messages.
    assert a1["cost_usd"] == pytest.approx(0.0058)
    assert a1["cost_usd_per_1000"] == pytest.approx(1.45)
    assert a1["prompt_tokens_per_1000"] == pytest.approx(1_225_000)
    assert a1["completion_tokens_per_1000"] == pytest.approx(237_500)
    a2 = rows[("Alpha", 2)]
    assert a2["open_rate"] == 0 and a2["cost_usd_per_1000"] == pytest.approx(2.0)
    alpha = rows[("Alpha", None)]
    assert alpha["open_rate"] == 0.5 and alpha["bounce_rate"] == 0.25
    assert alpha["cost_usd"] == pytest.approx(0.0078)
    assert alpha["cost_usd_per_1000"] == pytest.approx(1.56)
    assert alpha["prompt_tokens_per_1000"] == pytest.approx(1_280_000)
    beta = rows[("Beta", None)]
    assert (beta["open_rate"], beta["complaint_rate"], beta["reply_rate"]) == (1.0, 0.5, 0.0)
    assert beta["cost_usd"] == 0 and beta["cost_usd_per_1000"] == 0
    assert math.isnan(rows[("Beta", 2)]["open_rate"])  # nothing sent: no rate


def test_due_to_sent_percentiles_per_step_campaign_and_overall(sessions, history):
    report = report_for(sessions)
    rows = by_key(report.steps) | by_key(report.campaigns)

    def lag(key):
        return rows[key]["due_to_sent_p50_s"], rows[key]["due_to_sent_p95_s"]

    # Alpha step 1: 60 s and 600 s; the bounce refused at handover has no sentAt.
    assert lag(("Alpha", 1)) == pytest.approx((330.0, 573.0))
    assert lag(("Alpha", 2)) == pytest.approx((120.0, 120.0))
    assert lag(("Alpha", None)) == pytest.approx((120.0, 552.0))  # 60, 120, 600
    assert lag(("Beta", 1)) == pytest.approx((30.0, 30.0))  # the unknown handover has no sentAt
    assert all(math.isnan(v) for v in lag(("Beta", 2)))  # sent at until: outside
    assert lag(("Beta", None)) == pytest.approx((30.0, 30.0))
    assert report.overall_latency == pytest.approx((90.0, 528.0))  # 30, 60, 120, 600


def test_one_campaign_only(sessions, history):
    report = report_for(sessions, campaign_id=history["alpha"])
    assert report.campaigns["campaign_name"].tolist() == ["Alpha"]
    assert report.steps["step"].tolist() == [1, 2]
    assert counts(by_key(report.campaigns)[("Alpha", None)]) == EXPECTED[("Alpha", None)]
    assert report.overall_latency == pytest.approx((120.0, 552.0))


def test_a_campaign_asked_for_is_listed_with_zeros_when_idle(sessions, history):
    report = report_for(sessions, campaign_id=history["gamma"])
    (gamma,) = report.campaigns.to_dict("records")
    assert gamma["campaign_name"] == "Gamma"
    assert counts(gamma) == dict.fromkeys(COUNTS, 0)
    assert report.steps["step"].tolist() == [1, 2]
    assert report.overall_latency == (None, None)


def test_a_later_window_sees_the_events_it_contains(sessions, history):
    # March: Alpha's waiting send and Beta's send at until; the late click and reply belong to
    # February's sends, so March counts none of them.
    window = ReportWindow(since=UNTIL, until=UNTIL + timedelta(days=31))
    with sessions() as session:
        report = compute_campaign_report(read_report_inputs(session, window), window)
    rows = by_key(report.steps)
    assert set(by_key(report.campaigns)) == {("Beta", None)}
    assert counts(rows[("Beta", 2)]) | {"enrolled": None} == dict(
        EXPECTED[("Beta", 2)], scheduled=0, generated=0, sent=1
    )
    assert rows[("Beta", 2)]["due_to_sent_p50_s"] == pytest.approx(3600.0)


def test_an_unknown_campaign_is_an_error(sessions, history):
    with pytest.raises(ValueError, match="no campaign with id 'missing'"):
        report_for(sessions, campaign_id="missing")


def test_the_review_queue_counts_what_waits_at_until_and_how_long(sessions, history):
    with sessions.begin() as session:
        h = History(session)
        gamma = session.get(Campaign, history["gamma"])
        steps = {
            s.stepOrder: s.id for s in session.query(SequenceStep).filter_by(campaignId=gamma.id)
        }
        for created, status in [
            (at(20, 9, month=1), "pending_review"),  # before the window: still waits
            (at(27, 21), "pending_review"),
            (at(27, 22), "rejected"),  # decided: not in the queue
            (at(2, 9, month=3), "pending_review"),  # after until
        ]:
            h.message(gamma, steps, h.enrol(gamma, created), 2, created, status=status)
    report = report_for(sessions)
    rows = by_key(report.campaigns) | by_key(report.steps)

    # Gamma did nothing else in February, and is in the report for its queue alone.
    oldest = (UNTIL - at(20, 9, month=1)).total_seconds()
    gamma_2 = rows[("Gamma", 2)]
    assert (gamma_2["pending_review"], gamma_2["oldest_pending_review_s"]) == (2, oldest)
    assert rows[("Gamma", None)]["pending_review"] == 2
    assert rows[("Gamma", 1)]["pending_review"] == 0
    assert rows[("Alpha", None)]["pending_review"] == 0


def test_sends_per_handover_day_and_replies_per_first_reply_day(sessions, history):
    report = report_for(sessions)
    daily = report.daily.loc[(report.daily["sent"] > 0) | (report.daily["replies"] > 0)]
    assert [
        tuple(row) for row in daily[["campaign_name", "day", "sent", "replies"]].to_numpy()
    ] == [
        ("Alpha", "2026-02-01", 1, 0),  # l5's step 2, two minutes after since
        ("Alpha", "2026-02-02", 1, 0),
        ("Alpha", "2026-02-03", 1, 1),  # s2 left, and s1's reply came
        ("Alpha", "2026-02-04", 1, 0),  # refused at handover with a bounce: it left
        ("Beta", "2026-02-10", 1, 0),  # its reply came in March: not in the window
        ("Beta", "2026-02-11", 1, 0),  # an unknown handover an open proves
    ]
    # Every day of February for both campaigns, and the funnel's sent and replies in total.
    assert len(report.daily) == 2 * 28
    totals = report.daily.groupby("campaign_name")[["sent", "replies"]].sum()
    campaigns = report.campaigns.set_index("campaign_name")[["sent", "replies"]]
    assert totals.to_dict("index") == campaigns.to_dict("index")


def test_load_report_gives_the_flows_frames(sessions, history, database_url):
    frames = load_report(since=SINCE, until=UNTIL, database_url=database_url)
    report = report_for(sessions)
    for name in ("steps", "campaigns", "daily", "mailbox_days"):
        pd.testing.assert_frame_equal(getattr(frames, name), getattr(report, name), obj=name)
    assert frames.totals == report.totals() and frames.variants.empty
    alpha = load_report(history["alpha"], since=SINCE, until=UNTIL, database_url=database_url)
    assert alpha.campaigns["campaign_name"].tolist() == ["Alpha"]
    assert alpha.window == ReportWindow(since=SINCE, until=UNTIL, campaign_id=history["alpha"])
