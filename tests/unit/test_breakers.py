"""The circuit breakers' lines, where they are set, and when figures cross them."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.breakers import BreakerLines
from core.campaigns.sending_rules import campaign_lines, describe_errors, parse_sending_rules
from core.mailboxes.health import MailboxHealth, breaker_reason
from core.settings import Settings

LINES = BreakerLines()


def reason(sends: int, hard: int = 0, complaints: int = 0, lines: BreakerLines = LINES):
    health = MailboxHealth(sends=sends, hard_bounces=hard, complaints=complaints)
    return breaker_reason(health, lines)


def test_the_defaults_are_the_documented_lines():
    assert LINES.model_dump(by_alias=True) == {
        "maxHardBounceRate": 0.03,
        "minSends": 50,
        "maxComplaints": 3,
        "maxComplaintRate": 0.001,
    }


def test_the_bounce_rate_does_not_trip_before_the_minimum_sample():
    assert reason(49, hard=49) is None
    assert reason(50, hard=5) == "hard bounces 5 of 50 sends (10.0%) in 7 days ≥ 3%"


def test_the_bounce_rate_trips_exactly_at_the_line():
    assert reason(100, hard=2) is None
    assert reason(100, hard=3) == "hard bounces 3 of 100 sends (3.0%) in 7 days ≥ 3%"
    assert reason(3000, hard=89) is None
    assert reason(3000, hard=90) is not None  # 3.0% of a larger sample


def test_complaints_trip_at_a_floor_of_three_whatever_the_rate():
    assert reason(10, complaints=2) is None  # 20%, but fewer than 3
    assert reason(10, complaints=3) == "complaints 3 of 10 sends (30.0%) in 7 days ≥ max(3, 0.1%)"
    assert reason(0, complaints=3) is not None  # complaints about sends outside the count


def test_above_the_floor_complaints_trip_at_their_rate():
    assert reason(5000, complaints=4) is None  # 0.08%
    assert reason(5000, complaints=5) == (
        "complaints 5 of 5000 sends (0.1%) in 7 days ≥ max(3, 0.1%)"
    )
    assert reason(7000, complaints=7) is not None


def test_both_lines_crossed_are_both_stated():
    assert reason(50, hard=5, complaints=3) == (
        "hard bounces 5 of 50 sends (10.0%) in 7 days ≥ 3%; "
        "complaints 3 of 50 sends (6.0%) in 7 days ≥ max(3, 0.1%)"
    )


def test_a_fresh_window_says_where_it_began_and_small_lines_keep_their_digits():
    health = MailboxHealth(sends=20, hard_bounces=1, complaints=0)
    lines = BreakerLines(min_sends=20, max_hard_bounce_rate=0.0005)
    resumed = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
    assert breaker_reason(health, lines, since=resumed) == (
        "hard bounces 1 of 20 sends (5.0%) since 2026-12-05 10:30 UTC ≥ 0.05%"
    )


def test_sending_rules_protection_overrides_a_campaigns_lines_in_camel_case():
    rules = parse_sending_rules({"protection": {"maxHardBounceRate": 0.05, "minSends": 100}})
    assert rules.protection == BreakerLines(max_hard_bounce_rate=0.05, min_sends=100)
    assert parse_sending_rules({}).protection == LINES


@pytest.mark.parametrize(
    ("protection", "problem"),
    [
        ({"maxHardBounceRate": 3}, "protection.maxHardBounceRate: Input should be less than"),
        ({"maxComplaintRate": 0}, "protection.maxComplaintRate: Input should be greater than 0"),
        ({"minSends": 0}, "protection.minSends: Input should be greater than or equal to 1"),
        ({"maxComplaint": 2}, "protection.maxComplaint: Extra inputs are not permitted"),
    ],
)
def test_bad_protection_is_refused_with_the_field(protection, problem):
    with pytest.raises(ValidationError) as refused:
        parse_sending_rules({"protection": protection})
    (line,) = describe_errors(refused.value)
    assert line.startswith(problem)


def test_a_campaign_whose_rules_do_not_validate_keeps_the_default_lines():
    assert campaign_lines({"dailyLimit": 0, "protection": {"minSends": 5}}) == LINES
    assert campaign_lines({"protection": {"minSends": 5}}) == BreakerLines(min_sends=5)


def test_the_environment_sets_every_mailboxs_lines(monkeypatch):
    monkeypatch.setenv("MAILBOX_MAX_HARD_BOUNCE_RATE", "0.02")
    monkeypatch.setenv("MAILBOX_BREAKER_MIN_SENDS", "100")
    monkeypatch.setenv("MAILBOX_MAX_COMPLAINTS", "2")
    monkeypatch.setenv("MAILBOX_MAX_COMPLAINT_RATE", "0.003")
    assert Settings(_env_file=None).mailbox_breaker_lines == BreakerLines(
        max_hard_bounce_rate=0.02, min_sends=100, max_complaints=2, max_complaint_rate=0.003
    )
    monkeypatch.setenv("MAILBOX_MAX_HARD_BOUNCE_RATE", "3")
    with pytest.raises(ValidationError, match="mailbox_max_hard_bounce_rate"):
        Settings(_env_file=None)
