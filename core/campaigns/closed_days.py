"""Days a lead gets no mail: the campaign's skipDates and the public holidays of its country."""

from dataclasses import dataclass
from datetime import date
from functools import cache

import holidays

from core.campaigns.countries import holiday_country, zone_country
from core.campaigns.sending_rules import SendingRules


@cache
def _calendar(country: str) -> holidays.HolidayBase:
    # English names for the reason an operator reads; a country without an English translation
    # keeps its own language. Observed days (Boxing Day moved to a Monday) count: offices close.
    return holidays.country_holidays(country, language="en_US")


@dataclass(frozen=True)
class ClosedDays:
    """Local dates on which a lead's window stays shut, and why each one is shut."""

    skip_dates: frozenset[date] = frozenset()
    country: str | None = None  # whose public holidays close a day; None closes none

    def reason(self, day: date) -> str | None:
        """Why `day` (a local date in the lead's zone) is closed, or None when it is open."""
        if day in self.skip_dates:
            return f"skip date {day.isoformat()} (skipDates)"
        if self.country is not None:
            name = _calendar(self.country).get(day)
            if name:
                return f"holiday: {name} ({self.country})"
        return None


NO_CLOSED_DAYS = ClosedDays()


def lead_country(
    custom_country: object, lead_timezone: str | None, rules: SendingRules
) -> str | None:
    """customFields.country if valid, else the lead's own zone's country, else holidayCountry."""
    return (
        holiday_country(custom_country)
        or (zone_country(lead_timezone) if lead_timezone else None)
        or rules.holiday_country
    )


def closed_days(
    rules: SendingRules, custom_country: object, lead_timezone: str | None
) -> ClosedDays:
    """The days closed to one lead: skipDates always, its country's holidays with skipHolidays."""
    country = lead_country(custom_country, lead_timezone, rules) if rules.skip_holidays else None
    if country is None and not rules.skip_dates:
        return NO_CLOSED_DAYS
    return ClosedDays(frozenset(rules.skip_dates), country)
