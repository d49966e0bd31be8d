"""The warm-up cap over simulated days, including the moments a day turns."""

from datetime import UTC, datetime, timedelta

import pytest

from core.mailboxes.warmup import Warmup

STARTED = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("elapsed", "cap"),
    [
        (timedelta(0), 5),
        (timedelta(days=1) - timedelta(milliseconds=1), 5),
        (timedelta(days=1), 8),
        (timedelta(days=2, hours=23), 11),
        (timedelta(days=11), 38),
        (timedelta(days=12), 40),  # 5 + 36 = 41, held at the daily limit
        (timedelta(days=400), 40),
    ],
)
def test_cap_grows_by_the_increment_each_whole_day_up_to_the_limit(elapsed, cap):
    assert Warmup(started_at=STARTED).cap(STARTED + elapsed) == cap


def test_before_the_start_the_first_day_cap_applies():
    assert Warmup(started_at=STARTED).cap(STARTED - timedelta(days=3)) == 5


def test_days_are_counted_whatever_zone_now_is_given_in():
    paris = datetime(2026, 11, 3, 0, 30, tzinfo=UTC).astimezone()
    assert Warmup(started_at=STARTED).cap(paris) == 8


def test_custom_ramp_and_a_limit_below_the_start():
    ramp = Warmup(daily_limit=100, start=10, increment=0, started_at=STARTED)
    assert ramp.cap(STARTED + timedelta(days=30)) == 10
    assert Warmup(daily_limit=3, started_at=STARTED).cap(STARTED) == 3
