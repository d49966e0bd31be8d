"""Countries for holiday calendars: ISO 3166-1 alpha-2 codes, and the country of a tz zone."""

import zoneinfo
from functools import cache
from importlib import resources
from pathlib import Path

import holidays


@cache
def _holiday_countries() -> frozenset[str]:
    # The package also lists alpha-3 aliases; only the two-letter codes are accepted here.
    return frozenset(code for code in holidays.list_supported_countries() if len(code) == 2)


def holiday_country(value: object) -> str | None:
    """value as an upper-case ISO 3166-1 alpha-2 code with a holiday calendar, else None."""
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    return code if code in _holiday_countries() else None


def _zone_table(name: str) -> str:
    """A table of the tz database, looked up where zoneinfo looks: TZPATH, then `tzdata`."""
    for directory in zoneinfo.TZPATH:
        path = Path(directory) / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    try:
        return resources.files("tzdata").joinpath("zoneinfo", name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return ""


@cache
def _zone_countries() -> dict[str, str]:
    """Zone name to country code.

    zone.tab gives each zone exactly one country and lists the per-country names (Europe/Jersey
    is JE, not GB); zone1970.tab, whose first code is the most populous country of a zone that
    spans several, covers any zone zone.tab lacks.
    """
    countries: dict[str, str] = {}
    for table in ("zone.tab", "zone1970.tab"):
        for line in _zone_table(table).splitlines():
            if line.startswith("#") or line.count("\t") < 2:
                continue
            codes, _coordinates, zone = line.split("\t")[:3]
            countries.setdefault(zone, codes.split(",")[0])
    return countries


def zone_country(zone: str) -> str | None:
    """The country of a tz zone (Europe/London is GB); None for UTC, Etc/* and old aliases."""
    return holiday_country(_zone_countries().get(zone))
