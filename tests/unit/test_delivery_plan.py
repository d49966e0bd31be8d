"""The delivery planner: stops, pauses, windows across DST, caps, gaps and retry backoff."""

import itertools
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.delivery.plan import (
    Action,
    DueSend,
    MailboxUsage,
    Usage,
    delivery_rules_problem,
    local_day_start,
    next_local_day,
    plan_deliveries,
    retry_at,
)

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromEmail": "alex@seller.example",
}
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday


def send(i: int = 0, *, rules: dict | None = None, **fields) -> DueSend:
    values = {
        "sendId": f"s{i:03}",
        "campaignId": "c1",
        "campaignLeadId": f"cl{i}",
        "leadId": f"l{i}",
        "workspaceId": "w1",
        "stepOrder": 1,
        "toEmail": f"lead{i}@buyer.example",
        "subject": "Hello",
        "body": "Hi",
        "scheduledFor": NOW - timedelta(minutes=1),
        "leadStatus": "active",
        "campaignStatus": "active",
        "sendingRules": RULES if rules is None else rules,
    }
    return DueSend.model_validate(values | fields)


def plan(sends, usage=None, *, now=NOW, wait=timedelta(minutes=4), seed=1):
    return plan_deliveries(
        sends, usage or Usage(), now=now, deadline=now + wait, rng=random.Random(seed)
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"leadStatus": "replied"}, "lead replied"),
        ({"leadStatus": "bounced"}, "lead bounced"),
        ({"leadStatus": "unsubscribed"}, "lead unsubscribed"),
        ({"leadStatus": "stopped"}, "lead stopped"),
        ({"suppressed": True}, "address is on the workspace's suppression list"),
        ({"campaignStatus": "completed"}, "campaign completed"),
        ({"campaignStatus": "archived"}, "campaign archived"),
    ],
)
def test_a_stopped_lead_or_ended_campaign_cancels(fields, reason):
    (decision,) = plan([send(**fields)])
    assert (decision.action, decision.reason) == (Action.cancel, reason)


def test_a_company_reply_cancels_only_when_the_campaign_asks():
    assert plan([send(companyReplied=True)])[0].action is Action.deliver
    rules = RULES | {"stopOnCompanyReply": True}
    (decision,) = plan([send(companyReplied=True, rules=rules)])
    assert decision.action is Action.cancel and "stopOnCompanyReply" in decision.reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"leadStatus": "paused"}, "lead paused"), ({"campaignStatus": "paused"}, "campaign paused")],
)
def test_a_pause_holds_without_cancelling(fields, reason):
    (decision,) = plan([send(**fields)])
    assert (decision.action, decision.reason) == (Action.defer, reason)
    assert decision.at == NOW + timedelta(hours=1)


def test_a_send_without_content_fails_with_a_reason():
    (decision,) = plan([send(subject=None)])
    assert decision.action is Action.fail and "no generated message" in decision.reason


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ({"window": {"start": "18:00", "end": "09:00"}}, "sendingRules invalid: window"),
        ({"timezone": "Mars/Olympus"}, "sendingRules invalid: timezone"),
        ({"dailyLimt": 5, "fromEmail": "a@b.example"}, "sendingRules invalid: dailyLimt"),
        ({}, "sendingRules has no sender"),
    ],
)
def test_unusable_rules_are_named(rules, problem):
    assert delivery_rules_problem(rules).startswith(problem)
    (decision,) = plan([send(rules=rules)])
    assert decision.action is Action.defer and decision.reason.startswith(problem)


def test_every_due_send_is_delivered_at_once_without_gaps():
    decisions = plan([send(i) for i in range(5)])
    assert {d.action for d in decisions} == {Action.deliver}
    assert {d.at for d in decisions} == {NOW}
    assert {d.mailbox.email for d in decisions} == {"alex@seller.example"}


def test_a_send_is_never_planned_before_its_time():
    later = NOW + timedelta(seconds=30)
    (decision,) = plan([send(scheduledFor=later)])
    assert decision.action is Action.deliver and decision.at == later


def test_gaps_and_jitter_space_a_mailboxs_sends_and_defer_past_the_wait():
    rules = RULES | {"minGapSeconds": 60, "jitterSeconds": 30}
    decisions = plan([send(i, rules=rules) for i in range(6)], wait=timedelta(minutes=4))
    slots = [d.at for d in decisions]
    assert all(b - a >= timedelta(seconds=60) for a, b in itertools.pairwise(slots))
    assert all(b - a <= timedelta(seconds=90) for a, b in itertools.pairwise(slots))
    delivered = [d for d in decisions if d.action is Action.deliver]
    deferred = [d for d in decisions if d.action is Action.defer]
    assert 3 <= len(delivered) <= 5 and len(delivered) + len(deferred) == 6
    assert all(d.at <= NOW + timedelta(minutes=4) for d in delivered)
    assert all(d.at > NOW + timedelta(minutes=4) for d in deferred)
    assert {d.reason for d in deferred} == {"mailbox gap (minGapSeconds)"}


def test_the_gap_counts_from_the_mailboxs_last_handover():
    rules = RULES | {"minGapSeconds": 60}
    usage = Usage(mailboxes={"alex@seller.example": MailboxUsage(1, NOW - timedelta(seconds=20))})
    (decision,) = plan([send(rules=rules)], usage)
    assert decision.action is Action.deliver and decision.at == NOW + timedelta(seconds=40)


def test_without_a_gap_another_runs_later_handover_defers_nothing():
    # An overlapping run stamped the mailbox's last handover just after this plan's `now`.
    usage = Usage(mailboxes={"alex@seller.example": MailboxUsage(1, NOW + timedelta(seconds=1))})
    decisions = plan([send(i) for i in range(3)], usage, wait=timedelta(0))
    assert [(d.action, d.at) for d in decisions] == [(Action.deliver, NOW)] * 3


def test_mailboxes_rotate_and_a_lead_keeps_its_mailbox():
    rules = {k: v for k, v in RULES.items() if k != "fromEmail"} | {
        "mailboxes": [{"email": "a@seller.example"}, {"email": "b@seller.example"}]
    }
    decisions = plan([send(i, rules=rules) for i in range(4)])
    assert (
        sorted(d.mailbox.email for d in decisions)
        == ["a@seller.example"] * 2 + ["b@seller.example"] * 2
    )
    sticky = plan([send(i, rules=rules, mailbox="B@seller.example") for i in range(4)])
    assert {d.mailbox.email for d in sticky} == {"b@seller.example"}


def test_the_campaign_cap_defers_to_the_next_local_day():
    rules = RULES | {"timezone": "America/New_York", "dailyLimit": 3}
    usage = Usage(campaigns={"c1": 1})
    decisions = plan([send(i, rules=rules) for i in range(4)], usage)
    assert [d.action for d in decisions] == [Action.deliver] * 2 + [Action.defer] * 2
    # 15:00 UTC is 10:00 in New York; the next local day starts at 05:00 UTC.
    assert decisions[2].at == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    assert decisions[2].reason == "campaign daily limit (3) reached"


def test_a_mailbox_cap_of_its_own_beats_the_default():
    rules = {k: v for k, v in RULES.items() if k != "fromEmail"} | {
        "mailboxDailyLimit": 10,
        "mailboxes": [{"email": "a@seller.example", "dailyLimit": 1}],
    }
    decisions = plan([send(i, rules=rules) for i in range(2)])
    assert [d.action for d in decisions] == [Action.deliver, Action.defer]
    assert decisions[1].reason == "mailbox daily limit (1) reached"
    assert decisions[1].mailbox.email == "a@seller.example"


WEEKDAYS_9_TO_17 = {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        # Friday 18:00 in New York -> Monday 09:00 (EST, UTC-5).
        (datetime(2026, 11, 20, 23, 0, tzinfo=UTC), "America/New_York", "2026-11-23T14:00"),
        # Saturday 7 March 2026, the night before the US spring-forward: Monday 09:00 is EDT.
        (datetime(2026, 3, 7, 12, 0, tzinfo=UTC), "America/New_York", "2026-03-09T13:00"),
        # Saturday 31 October 2026, before the US fall-back: Monday 09:00 is EST again.
        (datetime(2026, 10, 31, 12, 0, tzinfo=UTC), "America/New_York", "2026-11-02T14:00"),
        # Europe springs forward on Sunday 29 March 2026: Monday 09:00 is CEST (UTC+2).
        (datetime(2026, 3, 28, 12, 0, tzinfo=UTC), "Europe/Berlin", "2026-03-30T07:00"),
        # Europe falls back on Sunday 25 October 2026: Monday 09:00 is CET (UTC+1).
        (datetime(2026, 10, 24, 12, 0, tzinfo=UTC), "Europe/Berlin", "2026-10-26T08:00"),
    ],
)
def test_windows_hold_across_dst_in_the_campaign_zone(now, zone, expected):
    rules = RULES | {"timezone": zone, "window": WEEKDAYS_9_TO_17}
    (decision,) = plan([send(rules=rules, scheduledFor=now)], now=now)
    assert decision.action is Action.defer and decision.reason == "outside the sending window"
    assert decision.at == datetime.fromisoformat(expected).replace(tzinfo=UTC)
    local = decision.at.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute, local.weekday()) == (9, 0, 0)


def test_the_leads_zone_beats_the_campaigns_across_dst():
    rules = RULES | {"timezone": "Europe/London", "window": WEEKDAYS_9_TO_17}
    # Sunday 8 March 2026 03:00 UTC, hours after the US sprang forward (London has not yet).
    now = datetime(2026, 3, 8, 3, 0, tzinfo=UTC)
    lead = send(rules=rules, scheduledFor=now, leadTimezone="America/Los_Angeles")
    campaign = send(1, rules=rules, scheduledFor=now)
    by_id = {d.send_id: d for d in plan([lead, campaign], now=now)}
    assert by_id["s000"].at == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)  # 09:00 PDT
    assert by_id["s001"].at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # 09:00 GMT


def test_a_window_opening_skipped_by_spring_forward_lands_after_the_gap():
    # Europe/Berlin 29 March 2026: 02:00-03:00 does not exist; a 02:30 opening means 03:30.
    window = {"start": "02:30", "end": "05:00", "days": EVERY_DAY}
    rules = RULES | {"timezone": "Europe/Berlin", "window": window}
    now = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # Sunday 00:00 CET
    (decision,) = plan([send(rules=rules, scheduledFor=now)], now=now)
    local = decision.at.astimezone(ZoneInfo("Europe/Berlin"))
    assert decision.at >= now and local.hour == 3 and local.utcoffset() == timedelta(hours=2)


def test_local_days_are_23_and_25_hours_long_across_dst():
    zone = ZoneInfo("America/New_York")
    spring = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    fall = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert next_local_day(spring, zone) - local_day_start(spring, zone) == timedelta(hours=23)
    assert next_local_day(fall, zone) - local_day_start(fall, zone) == timedelta(hours=25)


def test_inside_the_window_a_send_goes_at_once_and_what_is_due_now_ignores_the_wait():
    rules = RULES | {"timezone": "America/New_York", "window": WEEKDAYS_9_TO_17}
    (decision,) = plan([send(rules=rules)], wait=timedelta(0))
    assert decision.action is Action.deliver and decision.at == NOW


def test_retry_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(3)
    delays = [retry_at(NOW, attempt, rng) - NOW for attempt in range(1, 10)]
    assert timedelta(minutes=4) <= delays[0] <= timedelta(minutes=6)
    assert timedelta(minutes=8) <= delays[1] <= timedelta(minutes=12)
    assert all(d <= timedelta(hours=4, minutes=48) for d in delays)
    assert delays[-1] >= timedelta(hours=3, minutes=12)


@pytest.mark.parametrize("status", ["pending_review", "rejected"])
def test_a_message_not_approved_holds_its_send_and_an_approved_one_goes(status):
    (held,) = plan([send(messageStatus=status)])
    assert (held.action, held.reason) == (Action.defer, f"message {status} (review before send)")
    assert held.at == NOW + timedelta(hours=1)
    assert plan([send(messageStatus="approved")])[0].action is Action.deliver
