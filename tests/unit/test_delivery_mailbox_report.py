"""The run's per-mailbox table built from a run's counts and the database's standings, and a dry
run's plan counted the way a run counts."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from core.delivery.mailbox_report import (
    GLOBAL_LOGIN,
    OWN_LOGIN,
    CampaignSender,
    MailboxFacts,
    MailboxStanding,
    compact_reasons,
    counting_days,
    mailbox_table,
)
from core.delivery.report import DeliveryColumn, DeliveryReport, PlannedSend, planned_report
from core.mailboxes.health import MailboxHealth
from core.mailboxes.warmup import Warmup
from core.statuses import MailboxStatus

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ALEX, BOB, SAM = "alex@seller.example", "bob@seller.example", "sam@seller.example"
ROTATING = {"mailboxes": [{"email": "Alex@Seller.example"}, {"email": BOB}]}
CAMPAIGNS = {
    "c1": CampaignSender(workspace_id="ws1", sending_rules=ROTATING),
    "c2": CampaignSender(
        workspace_id="ws1",
        sending_rules={"timezone": "America/New_York", "mailboxes": [{"email": ALEX}]},
    ),
    # Two campaigns share Sam, who has no row: each applies its own cap.
    "c3": CampaignSender(workspace_id="ws1", sending_rules={"fromEmail": SAM}),
    "c4": CampaignSender(
        workspace_id="ws1",
        sending_rules={"mailboxes": [{"email": SAM, "dailyLimit": 30}], "mailboxDailyLimit": 80},
    ),
    "c5": CampaignSender(workspace_id="ws2", sending_rules={"window": {"days": []}}),
}
HEALTHY = MailboxHealth(sends=0, hard_bounces=0, complaints=0)


def run_report() -> DeliveryReport:
    report = DeliveryReport()
    for _ in range(3):
        report.count("c1", "Alex@Seller.example", DeliveryColumn.sent)
    report.count("c2", ALEX, DeliveryColumn.sent)
    report.count("c2", ALEX, DeliveryColumn.bounced, "550 5.1.1 unknown")
    for n, reason in enumerate(("mailbox paused: bounces at 4%", "outside the sending window")):
        for _ in range(4 - n):
            report.count("c1", BOB, DeliveryColumn.deferred, reason)
    report.count("c1", BOB, DeliveryColumn.cancelled, "lead replied")
    report.count("c3", SAM, DeliveryColumn.sent)
    report.count("c4", SAM, DeliveryColumn.deferred, "mailbox daily limit (30) reached")
    report.count("c5", None, DeliveryColumn.deferred, "sendingRules invalid")  # no mailbox
    report.count("gone", ALEX, DeliveryColumn.sent)  # a campaign deleted meanwhile
    return report


def facts() -> MailboxFacts:
    warm = Warmup(daily_limit=40, start=5, increment=3, started_at=NOW - timedelta(days=2))
    return MailboxFacts(
        at=NOW,
        campaigns=CAMPAIGNS,
        standings={
            ("ws1", ALEX): MailboxStanding(
                status=MailboxStatus.active,
                reason=None,
                warmup=warm,
                used_today=9,
                health=MailboxHealth(sends=40, hard_bounces=1, complaints=0),
            ),
            ("ws1", BOB): MailboxStanding(
                status=MailboxStatus.paused,
                reason="bounces at 4%",
                warmup=warm,
                used_today=0,
                health=MailboxHealth(sends=50, hard_bounces=2, complaints=1),
            ),
            ("ws1", SAM): MailboxStanding(
                status=None, reason=None, warmup=None, used_today=30, health=HEALTHY
            ),
        },
    )


def test_one_line_per_mailbox_with_the_runs_counts_its_cap_and_its_health():
    rows = {row["mailbox"]: row for row in mailbox_table(run_report(), facts())}
    assert list(rows) == ["Alex@Seller.example", BOB, SAM]  # by workspace, then address
    alex, bob, sam = rows.values()
    # Alex's lines of two campaigns in one: its row's warm-up cap on day 2 is 5 + 2 x 3.
    assert alex == {
        "workspace_id": "ws1",
        "mailbox": "Alex@Seller.example",
        "login": OWN_LOGIN,
        "status": "active",
        "reason": "",
        "sent": 4,
        "deferred": 0,
        "why": "",
        "bounced": 1,
        "cap_today": 11,
        "used_today": 9,
        "sends_7d": 40,
        "hard_bounces_7d": 1,
        "hard_bounce_rate_7d": "2.5%",
        "complaints_7d": 0,
        "complaint_rate_7d": "0.0%",
    }
    assert (bob["status"], bob["reason"], bob["deferred"]) == ("paused", "bounces at 4%", 7)
    assert bob["why"] == "mailbox paused: bounces at 4% ×4; outside the sending window ×3"
    assert (bob["hard_bounce_rate_7d"], bob["complaint_rate_7d"]) == ("4.0%", "2.0%")
    # No row: the global login, each campaign's cap from its sendingRules, no rates yet.
    assert (sam["login"], sam["status"], sam["cap_today"], sam["used_today"]) == (
        GLOBAL_LOGIN,
        "-",
        "30/50",
        30,
    )
    assert (sam["sent"], sam["deferred"], sam["hard_bounce_rate_7d"]) == (1, 1, "-")


def test_a_shared_global_mailbox_with_one_cap_shows_it_as_a_number():
    report = DeliveryReport()
    report.count("c3", SAM, DeliveryColumn.sent)
    (row,) = mailbox_table(report, facts())
    assert row["cap_today"] == 50  # mailboxDailyLimit's default


def test_counting_days_are_the_plans_for_each_mailbox_of_the_table():
    days = counting_days(run_report(), CAMPAIGNS, NOW)
    # Alex counts from c1's midnight (UTC), the first of its campaigns; c5 named no mailbox.
    assert days == {
        ("ws1", ALEX): datetime(2026, 11, 25, tzinfo=UTC),
        ("ws1", BOB): datetime(2026, 11, 25, tzinfo=UTC),
        ("ws1", SAM): datetime(2026, 11, 25, tzinfo=UTC),
    }
    unusable = {"c1": CampaignSender(workspace_id="ws1", sending_rules={"timezone": "Mars/Base"})}
    report = DeliveryReport()
    report.count("c1", ALEX, DeliveryColumn.deferred, "sendingRules invalid")
    assert counting_days(report, unusable, NOW) == {("ws1", ALEX): None}


def test_reasons_beyond_the_main_three_are_summed_up():
    reasons = Counter({"a": 1, "b": 5, "c": 2, "d": 2, "e": 1})
    assert compact_reasons(reasons) == "b ×5; c ×2; d ×2; +2 more"
    assert compact_reasons(Counter()) == ""


def test_a_dry_runs_plan_counts_as_the_run_would():
    plan = [
        PlannedSend(
            send_id=f"s{i}", campaign_id="c1", mailbox=mailbox, action=action, at="", reason=why
        )
        for i, (mailbox, action, why) in enumerate(
            [
                (ALEX, "deliver", ""),
                (ALEX, "defer", "mailbox daily limit (11) reached"),
                (BOB, "fail", "EmailSend has no generated message to send"),
                ("-", "cancel", "lead replied"),
            ]
        )
    ]
    report = planned_report(plan)
    counts = {(row["mailbox"], col): row[col] for row in report.table() for col in row}
    assert counts[(ALEX, "sent")] == 1 and counts[(ALEX, "deferred")] == 1
    assert counts[(ALEX, "why")] == "deferred: mailbox daily limit (11) reached ×1"
    assert counts[(BOB, "failed")] == 1 and counts[("-", "cancelled")] == 1
    assert report.total(DeliveryColumn.sent) == 1
