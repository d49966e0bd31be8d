"""The campaign report's A/B rows on PostgreSQL: per step and variant, the window's sends and
what came back, a positive reply being one classified interested or asking for a meeting."""

from datetime import UTC, datetime

from sqlalchemy import select

from core.analytics.campaign_report import ReportWindow, compute_campaign_report, summary_markdown
from db.models import EngagementEvent, ReplyClassification, SequenceStepVariant
from db.queries.report import read_report_inputs
from tests.integration.test_campaign_report_queries import History, at

WINDOW = ReportWindow(
    since=datetime(2026, 2, 1, tzinfo=UTC), until=datetime(2026, 3, 1, tzinfo=UTC)
)


def seed(sessions, *, ab_test: dict | None = None, classify: bool = True) -> str:
    with sessions.begin() as session:
        h = History(session)
        camp, steps = h.campaign("Variants")
        camp.sendingRules = {"abTest": ab_test} if ab_test else {}
        for key in ("A", "B"):
            session.add(SequenceStepVariant(stepId=steps[1], key=key, weight=1))

        def sent(variant, day, *events, step=1, month=2):
            lead = h.enrol(camp, at(1, month=month))
            created = at(day, 8, month=month)
            message = h.message(camp, steps, lead, step, created, variantKey=variant)
            send = h.send(
                camp, steps, lead, step, message, created, "sent",
                sentAt=at(day, 10, month=month), variantKey=variant,
            )  # fmt: skip
            for kind in events:
                h.event(send, kind, at(day, 12, month=month))
            return send

        sent("A", 2, "reply", "click", "click")
        sent("A", 3, "bounce")
        sent("A", 4)
        sent("A", 5, "open")  # opens are never an A/B figure
        sent("A", 5, "reply", month=1)  # before the window
        interested = sent("B", 2, "reply")
        sent("B", 3, "reply")  # not classified
        unsubscribed = sent("B", 4, "unsubscribe")
        # A link scanner's click is not a person's: never counted.
        session.add(
            EngagementEvent(
                emailSendId=unsubscribed.id, type="click", occurredAt=at(4, 11),
                dedupeKey="test:machine", isMachine=True, machineReason="scanner-user-agent",
            )
        )  # fmt: skip
        sent(None, 4, "reply", step=2)  # a step without variants: no row
        if classify:
            reply = session.scalar(
                select(EngagementEvent.id).filter_by(emailSendId=interested.id, type="reply")
            )
            session.add(
                ReplyClassification(
                    engagementEventId=reply, intent="interested", confidence=0.9,
                    summary="wants a call", method="rules", action="stopped",
                )
            )  # fmt: skip
        return camp.id


def report(sessions):
    with sessions() as session:
        inputs = read_report_inputs(session, WINDOW)
    return compute_campaign_report(inputs, WINDOW)


def test_each_step_variant_gets_its_counts_and_rates(sessions):
    seed(sessions)
    computed = report(sessions)
    rows = computed.table("variant")
    assert [(r["campaign_name"], r["step"], r["variant"]) for r in rows] == [
        ("Variants", 1, "A"),
        ("Variants", 1, "B"),
    ]
    counts = ("sent", "replies", "positive_replies", "unsubscribes", "bounces", "unique_clicks")
    assert [tuple(r[c] for c in counts) for r in rows] == [(4, 1, 0, 0, 1, 1), (3, 2, 1, 1, 0, 0)]
    a, b = rows
    assert (a["reply_rate"], a["positive_reply_rate"]) == (0.25, 0.0)
    assert (round(b["reply_rate"], 6), round(b["positive_reply_rate"], 6)) == (0.666667, 0.333333)
    # A reply was classified, so the step compares positive replies.
    assert {r["metric"] for r in rows} == {"positive_reply_rate"}
    # B is the best on positive replies; A is compared with it. Far too few sends to tell.
    assert (a["rate"], round(b["rate"], 6), b["p_value"]) == (0.0, 0.333333, None)
    assert 0 < a["p_value"] <= 1
    assert a["verdict"] == b["verdict"] and a["verdict"].startswith("no winner yet: about ")
    summary = summary_markdown(computed)
    assert "## A/B variants" in summary and "| Variants | 1 | B | 3 | 2 | 1 |" in summary
    assert f"- Variants, step 1: {a['verdict']}" in summary


def test_without_a_classified_reply_replies_are_compared(sessions):
    seed(sessions, classify=False)
    assert {r["metric"] for r in report(sessions).table("variant")} == {"reply_rate"}


def test_the_campaigns_configured_metric_wins(sessions):
    seed(sessions, ab_test={"metric": "reply_rate"})
    assert {r["metric"] for r in report(sessions).table("variant")} == {"reply_rate"}
