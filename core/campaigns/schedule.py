"""When a lead's mail may leave: send windows in the lead's zone, and the next step's date."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.campaigns.sending_rules import SendingRules, SendWindow


def lead_zone(lead_timezone: str | None, rules: SendingRules) -> ZoneInfo:
    """The lead's own zone when it names a real one, else the campaign's."""
    if lead_timezone:
        try:
            return ZoneInfo(lead_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(rules.timezone)


def _at_local(day: datetime, clock: time, zone: ZoneInfo) -> datetime:
    # A wall time skipped by a DST jump resolves past the gap, never before the window opens.
    local = datetime.combine(day.date(), clock, tzinfo=zone)
    return local.astimezone(UTC)


def next_window_opening(at: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """The earliest instant >= at inside the window, in UTC; at itself when already inside."""
    local = at.astimezone(zone)
    allowed = {day.number for day in window.days}
    for offset in range(8):
        day = local + timedelta(days=offset)
        if day.weekday() not in allowed:
            continue
        opens = _at_local(day, window.start, zone)
        closes = _at_local(day, window.end, zone)
        if offset == 0 and opens <= at < closes:
            return at
        if at < opens:
            return opens
    raise AssertionError("a window with at least one day always opens within a week")


def next_step_date(sent_for: datetime, delay_days: int, zone: ZoneInfo) -> datetime:
    """sent_for plus delay_days calendar days in the lead's zone: 10:00 stays 10:00 across DST."""
    local = sent_for.astimezone(zone)
    later = datetime.combine(local.date() + timedelta(days=delay_days), local.timetz())
    return later.astimezone(UTC)
