"""When a lead's mail may leave: send windows in the lead's zone, and the next step's date."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.campaigns.closed_days import NO_CLOSED_DAYS, ClosedDays
from core.campaigns.sending_rules import SendingRules, SendWindow

# skipDates holds at most 366 dates and a window at least one weekday, so an opening always
# comes within ten years, even past every holiday of the busiest calendar.
_SEARCH_DAYS = 3660
_REASONS_SHOWN = 3


def lead_zone(lead_timezone: str | None, rules: SendingRules) -> ZoneInfo:
    """The lead's own zone when it names a real one, else the campaign's."""
    if lead_timezone:
        try:
            return ZoneInfo(lead_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(rules.timezone)


def _at_local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    # A wall time skipped by a DST jump resolves past the gap, never before the window opens.
    local = datetime.combine(day, clock, tzinfo=zone)
    return local.astimezone(UTC)


@dataclass(frozen=True)
class Opening:
    """The earliest allowed instant (UTC) and why each closed day before it was passed over."""

    at: datetime
    skipped: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """The closed days that pushed the opening back, for a deferral; None if none did."""
        if not self.skipped:
            return None
        shown = "; ".join(self.skipped[:_REASONS_SHOWN])
        more = len(self.skipped) - _REASONS_SHOWN
        return f"{shown} and {more} more closed day(s)" if more > 0 else shown


def next_opening(
    at: datetime, window: SendWindow, zone: ZoneInfo, closed: ClosedDays = NO_CLOSED_DAYS
) -> Opening:
    """The earliest instant >= at inside the window on a day that is not closed, in UTC.

    A closed day is named in `skipped` only when its window would otherwise have been the one.
    """
    first = at.astimezone(zone).date()
    allowed = {day.number for day in window.days}
    skipped: list[str] = []
    for offset in range(_SEARCH_DAYS):
        day = first + timedelta(days=offset)
        if day.weekday() not in allowed or at >= _at_local(day, window.end, zone):
            continue
        why = closed.reason(day)
        if why is not None:
            skipped.append(why)
            continue
        return Opening(max(at, _at_local(day, window.start, zone)), tuple(skipped))
    raise AssertionError("a window with at least one day always opens within ten years")


def next_window_opening(at: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """The earliest instant >= at inside the window, in UTC; at itself when already inside."""
    return next_opening(at, window, zone).at


def next_step_date(sent_for: datetime, delay_days: int, zone: ZoneInfo) -> datetime:
    """sent_for plus delay_days calendar days in the lead's zone: 10:00 stays 10:00 across DST."""
    local = sent_for.astimezone(zone)
    later = datetime.combine(local.date() + timedelta(days=delay_days), local.timetz())
    return later.astimezone(UTC)
