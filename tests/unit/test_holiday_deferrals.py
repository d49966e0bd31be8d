"""Holidays and skip dates in delivery planning, and in the next step's date."""

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.campaigns.sending_rules import SendingRules
from core.delivery.plan import Action, DueSend, Usage, plan_deliveries
from core.generation.due_lead import DueLead
from core.generation.generate import plan_progression
from tests.unit.test_delivery_plan import send as planner_send

NY = ZoneInfo("America/New_York")
THANKSGIVING_10AM = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # Thursday 10:00 in New York
FRIDAY_9AM = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
RULES = {
    "timezone": "America/New_York",
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromEmail": "alex@seller.example",
    "skipHolidays": True,
}


def send(i: int = 0, *, rules: dict | None = None, **fields) -> DueSend:
    """The planner tests' send, due a minute before 10:00 on Thanksgiving under these rules."""
    due = {"scheduledFor": THANKSGIVING_10AM - timedelta(minutes=1)}
    return planner_send(i, rules=RULES if rules is None else rules, **(due | fields))


def plan(sends, usage=None, *, now=THANKSGIVING_10AM):
    return plan_deliveries(
        sends, usage or Usage(), now=now, deadline=now + timedelta(minutes=4), rng=random.Random(1)
    )


def test_a_send_on_a_holiday_waits_for_the_next_working_day_with_the_holiday_named():
    (decision,) = plan([send(leadTimezone="America/New_York")])
    assert (decision.action, decision.at) == (Action.defer, FRIDAY_9AM)
    assert decision.reason == "holiday: Thanksgiving Day (US)"


def test_the_lead_country_decides_whose_holiday_it_is():
    # A French lead in New York's zone: Thanksgiving is a working day in France.
    (decision,) = plan([send(leadTimezone="America/New_York", leadCountry="FR")])
    assert (decision.action, decision.at) == (Action.deliver, THANKSGIVING_10AM)


def test_the_campaign_holiday_country_covers_leads_with_neither():
    rules = RULES | {"holidayCountry": "US"}
    (decision,) = plan([send(rules=rules)])
    assert (decision.action, decision.reason) == (Action.defer, "holiday: Thanksgiving Day (US)")
    (no_country,) = plan([send()])  # no country anywhere: no holiday skipping for this lead
    assert no_country.action is Action.deliver


def test_holidays_are_ignored_unless_the_campaign_asks():
    rules = {k: v for k, v in RULES.items() if k != "skipHolidays"}
    (decision,) = plan([send(rules=rules, leadTimezone="America/New_York", leadCountry="US")])
    assert decision.action is Action.deliver


def test_a_skip_date_defers_every_lead_of_the_campaign():
    rules = RULES | {"skipHolidays": False, "skipDates": ["2026-11-26"]}
    decisions = plan([send(0, rules=rules, leadCountry="FR"), send(1, rules=rules)])
    assert {(d.action, d.at, d.reason) for d in decisions} == {
        (Action.defer, FRIDAY_9AM, "skip date 2026-11-26 (skipDates)")
    }


def test_a_bad_country_in_the_lead_data_falls_back_to_its_zone():
    (decision,) = plan([send(leadTimezone="America/New_York", leadCountry={"x": 1})])
    assert decision.reason == "holiday: Thanksgiving Day (US)"


def test_a_full_daily_cap_reopens_after_the_holiday():
    rules = RULES | {"dailyLimit": 1}
    wednesday = THANKSGIVING_10AM - timedelta(days=1)
    (decision,) = plan(
        [send(rules=rules, leadTimezone="America/New_York", scheduledFor=wednesday)],
        Usage(campaigns={"c1": 1}),
        now=wednesday,
    )
    assert (decision.action, decision.at) == (Action.defer, FRIDAY_9AM)
    assert decision.reason == "campaign daily limit (1) reached"


@pytest.mark.parametrize("hours", range(0, 24 * 9, 5))
def test_a_send_never_moves_earlier(hours):
    now = datetime(2026, 11, 22, tzinfo=UTC) + timedelta(hours=hours)
    rules = RULES | {"skipDates": ["2026-11-27", "2026-11-30"]}
    sends = [
        send(0, rules=rules, scheduledFor=now - timedelta(hours=3), leadTimezone="Asia/Tokyo"),
        send(1, rules=rules, scheduledFor=now, leadTimezone="America/New_York"),
        send(2, rules=rules, scheduledFor=now - timedelta(days=2), leadCountry="US"),
    ]
    by_id = {s.sendId: s for s in sends}
    for decision in plan(sends, now=now):
        assert decision.at is not None and decision.at >= max(
            now, by_id[decision.send_id].scheduledFor
        )
        if (
            decision.action is Action.defer
            and decision.reason
            and "Thanksgiving Day (US)" in decision.reason
        ):
            assert decision.at > THANKSGIVING_10AM


def due_lead(**overrides) -> DueLead:
    fields = {
        "campaignLeadId": "cl1",
        "campaignId": "c1",
        "leadId": "l1",
        "workspaceId": "w1",
        "stepOrder": 1,
        "nextScheduledDate": THANKSGIVING_10AM,
        "attempts": 0,
        "email": "sarah@acme.example",
        "timezone": "America/New_York",
        "nextStepDelayDays": 1,
    }
    return DueLead.model_validate(fields | overrides)


def test_the_next_step_counts_its_delay_from_the_day_the_send_can_leave():
    rules = SendingRules.model_validate(RULES)
    progression = plan_progression(due_lead(), rules, THANKSGIVING_10AM)
    # The send keeps its slot, so delivery defers it with the holiday named ...
    assert progression.scheduled_for == THANKSGIVING_10AM
    # ... and the follow-up waits a day after Friday, not a day after Thursday.
    assert progression.next_scheduled_date == FRIDAY_9AM + timedelta(days=1)
    french = plan_progression(due_lead(customFields={"country": "FR"}), rules, THANKSGIVING_10AM)
    assert french.next_scheduled_date == THANKSGIVING_10AM + timedelta(days=1)
    plain = plan_progression(
        due_lead(), SendingRules(timezone="America/New_York"), THANKSGIVING_10AM
    )
    assert plain.next_scheduled_date == THANKSGIVING_10AM + timedelta(days=1)
