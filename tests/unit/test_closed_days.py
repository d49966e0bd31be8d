"""Holidays and skip dates: the lead's country, the closed days, and the window past them."""

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from core.campaigns import countries
from core.campaigns.closed_days import NO_CLOSED_DAYS, ClosedDays, closed_days, lead_country
from core.campaigns.countries import holiday_country, zone_country
from core.campaigns.schedule import next_opening
from core.campaigns.sending_rules import SendingRules, SendWindow, describe_errors

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
WEEKDAYS_9_TO_5 = SendWindow()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_thanksgiving_2026_is_a_us_holiday_and_not_a_french_one():
    thanksgiving = date(2026, 11, 26)
    assert ClosedDays(country="US").reason(thanksgiving) == "holiday: Thanksgiving Day (US)"
    assert ClosedDays(country="FR").reason(thanksgiving) is None


def test_14_july_2027_is_a_french_holiday_and_not_a_us_one():
    bastille_day = date(2027, 7, 14)
    assert ClosedDays(country="FR").reason(bastille_day) == "holiday: National Day (FR)"
    assert ClosedDays(country="US").reason(bastille_day) is None


def test_a_skip_date_is_closed_whatever_the_country():
    closed = ClosedDays(skip_dates=frozenset({date(2026, 12, 24)}))
    assert closed.reason(date(2026, 12, 24)) == "skip date 2026-12-24 (skipDates)"
    assert closed.reason(date(2026, 12, 23)) is None


@pytest.mark.parametrize(
    ("zone", "country"),
    [
        ("Europe/London", "GB"),
        ("Europe/Jersey", "JE"),  # a per-country name zone.tab lists, not folded into GB
        ("America/New_York", "US"),
        ("Europe/Paris", "FR"),
        ("Asia/Tokyo", "JP"),
        ("UTC", None),
        ("Etc/GMT+5", None),
        ("Mars/Olympus_Mons", None),
    ],
)
def test_the_zone_table_gives_a_zone_its_country(zone, country):
    assert zone_country(zone) == country


def test_the_zone_table_comes_from_the_tzdata_package_without_a_system_database(monkeypatch):
    monkeypatch.setattr(zoneinfo, "TZPATH", ())
    countries._zone_countries.cache_clear()
    try:
        assert zone_country("Europe/London") == "GB"
    finally:
        countries._zone_countries.cache_clear()


@pytest.mark.parametrize(
    ("value", "code"),
    [("US", "US"), (" fr ", "FR"), ("gb", "GB"), ("France", None), ("USA", None), ("ZZ", None),
     (None, None), (12, None), ("", None)],
)  # fmt: skip
def test_only_alpha_2_codes_with_a_calendar_are_countries(value, code):
    assert holiday_country(value) == code


RULES = SendingRules.model_validate({"skipHolidays": True, "holidayCountry": "DE"})


@pytest.mark.parametrize(
    ("custom", "timezone", "country"),
    [
        ("fr", "America/New_York", "FR"),  # customFields.country wins
        ("France", "America/New_York", "US"),  # not a code: the zone's country
        (None, "Europe/London", "GB"),  # a lead in London with no country gets GB's
        (None, None, "DE"),  # no zone: the campaign's holidayCountry
        (None, "UTC", "DE"),  # a zone without a country
        (None, "Not/AZone", "DE"),
    ],
)
def test_the_lead_country_comes_from_its_fields_then_its_zone_then_the_campaign(
    custom, timezone, country
):
    assert lead_country(custom, timezone, RULES) == country


def test_no_country_anywhere_means_no_holidays_for_that_lead():
    rules = SendingRules.model_validate({"skipHolidays": True})
    assert lead_country(None, None, rules) is None
    assert closed_days(rules, None, None) is NO_CLOSED_DAYS


def test_holidays_are_skipped_only_when_the_campaign_asks():
    assert closed_days(SendingRules(), "US", "America/New_York") is NO_CLOSED_DAYS
    skip_dates = SendingRules.model_validate({"skipDates": ["2026-12-24"]})
    assert closed_days(skip_dates, "US", None) == ClosedDays(frozenset({date(2026, 12, 24)}))
    assert closed_days(RULES, "US", None) == ClosedDays(frozenset(), "US")


def test_the_rules_accept_the_new_keys_and_keep_their_defaults_off():
    assert (SendingRules().skip_holidays, SendingRules().holiday_country) == (False, None)
    rules = SendingRules.model_validate(
        {
            "skipHolidays": True,
            "holidayCountry": "us",
            "skipDates": ["2026-12-24", date(2027, 1, 1)],
        }
    )
    assert rules.holiday_country == "US"
    assert rules.skip_dates == [date(2026, 12, 24), date(2027, 1, 1)]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"holidayCountry": "ZZ"}, "holidayCountry: Value error, 'ZZ' is not an ISO 3166-1"),
        ({"holidayCountry": "France"}, "holidayCountry: Value error, 'France' is not an ISO"),
        (
            {"skipDates": ["24/12/2026"]},
            "skipDates.0: Value error, '24/12/2026' is not an ISO date",
        ),
        ({"skipDates": [1798070400]}, "skipDates.0: Value error, 1798070400 is not an ISO date"),
        ({"skipDates": ["2026-02-30"]}, "skipDates.0: Input should be a valid date"),
        ({"skipDates": "2026-12-24"}, "skipDates: Input should be a valid list"),
        ({"skipDates": ["2026-01-01"] * 367}, "skipDates: List should have at most 366 items"),
        ({"skipHolidays": "sometimes"}, "skipHolidays: Input should be a valid boolean"),
    ],
)
def test_bad_holiday_rules_name_the_field(raw, error):
    with pytest.raises(ValidationError) as caught:
        SendingRules.model_validate(raw)
    assert describe_errors(caught.value)[0].startswith(error)


def test_a_holiday_moves_the_opening_to_the_next_working_day_and_says_why():
    at = utc(2026, 11, 26, 15, 0)  # Thanksgiving, 10:00 in New York
    opening = next_opening(at, WEEKDAYS_9_TO_5, NY, ClosedDays(country="US"))
    assert opening.at == utc(2026, 11, 27, 14, 0)  # Friday 09:00 EST
    assert opening.reason == "holiday: Thanksgiving Day (US)"


def test_an_evening_before_a_holiday_also_names_it():
    at = utc(2026, 11, 25, 23, 0)  # Wednesday 18:00 in New York: the window has closed
    opening = next_opening(at, WEEKDAYS_9_TO_5, NY, ClosedDays(country="US"))
    assert (opening.at, opening.reason) == (
        utc(2026, 11, 27, 14, 0),
        "holiday: Thanksgiving Day (US)",
    )


def test_a_holiday_after_the_window_closed_is_not_the_reason():
    at = utc(2026, 11, 26, 23, 0)  # Thanksgiving 18:00: the window was shut anyway
    opening = next_opening(at, WEEKDAYS_9_TO_5, NY, ClosedDays(country="US"))
    assert (opening.at, opening.reason) == (utc(2026, 11, 27, 14, 0), None)


def test_a_holiday_friday_before_a_dst_change_moves_to_monday_in_the_lead_zone():
    # Good Friday, 26 March 2027; London springs forward on Sunday 28 March.
    at = utc(2027, 3, 26, 7, 0)  # 07:00 GMT, before the window
    opening = next_opening(
        at, WEEKDAYS_9_TO_5, LONDON, ClosedDays(country=zone_country("Europe/London"))
    )
    assert opening.at == utc(2027, 3, 29, 8, 0)  # Monday 09:00 BST, an hour earlier in UTC
    assert opening.at.astimezone(LONDON).hour == 9
    assert opening.reason == "holiday: Good Friday (GB)"


def test_closed_days_in_a_row_are_all_named():
    at = utc(2026, 12, 24, 12, 0)  # Thursday in London
    closed = ClosedDays(frozenset({date(2026, 12, 24)}), "GB")
    opening = next_opening(at, WEEKDAYS_9_TO_5, LONDON, closed)
    assert opening.at == utc(2026, 12, 29, 9, 0)  # Tuesday: Boxing Day is observed on Monday
    assert opening.reason == (
        "skip date 2026-12-24 (skipDates); holiday: Christmas Day (GB); "
        "holiday: Boxing Day (observed) (GB)"
    )


def test_a_long_run_of_closed_days_is_summarised():
    days = frozenset(date(2026, 12, 1) + timedelta(days=n) for n in range(10))
    opening = next_opening(utc(2026, 12, 1, 8, 0), WEEKDAYS_9_TO_5, LONDON, ClosedDays(days))
    assert opening.at == utc(2026, 12, 11, 9, 0)
    assert opening.reason is not None and opening.reason.endswith("and 5 more closed day(s)")


@pytest.mark.parametrize("zone", [NY, LONDON, ZoneInfo("Australia/Sydney")])
def test_an_opening_is_never_earlier_and_never_on_a_closed_day(zone):
    closed = ClosedDays(frozenset({date(2026, 11, 27), date(2027, 3, 29)}), "US")
    at = utc(2026, 10, 20)
    while at < utc(2027, 4, 10):
        opening = next_opening(at, WEEKDAYS_9_TO_5, zone, closed).at
        local = opening.astimezone(zone)
        assert opening >= at
        assert closed.reason(local.date()) is None and local.weekday() < 5
        assert 9 <= local.hour < 17
        at += timedelta(hours=7, minutes=13)
