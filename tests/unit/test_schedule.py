"""Send windows in the lead's zone, across weekends and daylight-saving changes."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.campaigns.schedule import lead_zone, next_step_date, next_window_opening
from core.campaigns.sending_rules import SendingRules, SendWindow

NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS_9_TO_5 = SendWindow()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_inside_the_window_sends_now():
    at = utc(2026, 11, 25, 15, 0)  # Wednesday 10:00 in New York
    assert next_window_opening(at, WEEKDAYS_9_TO_5, NY) == at


def test_before_the_window_waits_for_the_local_opening():
    at = utc(2026, 11, 25, 12, 0)  # 07:00 in New York
    assert next_window_opening(at, WEEKDAYS_9_TO_5, NY) == utc(2026, 11, 25, 14, 0)


def test_after_closing_on_friday_moves_to_monday():
    at = utc(2026, 11, 27, 23, 0)  # Friday 18:00 in New York
    assert next_window_opening(at, WEEKDAYS_9_TO_5, NY) == utc(2026, 11, 30, 14, 0)


def test_the_window_end_is_exclusive():
    at = utc(2026, 11, 25, 22, 0)  # exactly 17:00 in New York
    assert next_window_opening(at, WEEKDAYS_9_TO_5, NY) == utc(2026, 11, 26, 14, 0)


def test_spring_forward_keeps_local_nine_oclock():
    # Paris jumps from 02:00 to 03:00 on Sunday 29 March 2026; Monday 09:00 is 07:00 UTC.
    at = utc(2026, 3, 28, 12, 0)  # Saturday
    assert next_window_opening(at, WEEKDAYS_9_TO_5, PARIS) == utc(2026, 3, 30, 7, 0)
    # the Friday before, 09:00 was still 08:00 UTC
    assert next_window_opening(utc(2026, 3, 27, 6, 0), WEEKDAYS_9_TO_5, PARIS) == utc(
        2026, 3, 27, 8, 0
    )


def test_a_window_opening_inside_the_dst_gap_never_opens_early():
    window = SendWindow(start=time(2, 30), end=time(5, 0), days=["sun"])
    opening = next_window_opening(utc(2026, 3, 28, 12, 0), window, PARIS)
    assert opening.astimezone(PARIS).hour == 3  # 02:30 does not exist that night
    assert opening >= utc(2026, 3, 29, 1, 0)


def test_fall_back_keeps_local_time_for_the_next_step():
    # New York falls back on Sunday 1 November 2026.
    sent = utc(2026, 10, 30, 14, 0)  # Friday 10:00 EDT
    assert next_step_date(sent, 3, NY) == utc(2026, 11, 2, 15, 0)  # Monday 10:00 EST


def test_zero_delay_keeps_the_instant():
    sent = utc(2026, 11, 25, 15, 30)
    assert next_step_date(sent, 0, NY) == sent


@pytest.mark.parametrize(
    ("lead_tz", "expected"),
    [("Asia/Tokyo", "Asia/Tokyo"), (None, "Europe/Paris"), ("Mars/Base", "Europe/Paris")],
)
def test_the_lead_zone_overrides_the_campaign_zone(lead_tz, expected):
    assert lead_zone(lead_tz, SendingRules(timezone="Europe/Paris")).key == expected


def test_an_every_day_window_is_never_early_across_the_dst_week():
    window = SendWindow(
        start=time(8), end=time(18), days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    start = utc(2026, 3, 26, 0, 0)
    for hours in range(0, 24 * 7, 5):
        at = start + timedelta(hours=hours)
        opening = next_window_opening(at, window, PARIS)
        assert opening >= at
        assert opening - at < timedelta(hours=15)
        assert time(8) <= opening.astimezone(PARIS).time() < time(18)
