"""One event record's fields read and checked, whatever its format: the shared vocabulary of
`core.engagement.event_files` and `core.engagement.provider_events`.
"""

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict

from core.engagement.events import BounceKind, Malformed, NormalisedEvent
from core.statuses import EngagementType


class EventFormat(StrEnum):
    """The record layouts `parse_record` reads; each value is also the event's `provider`."""

    generic = "generic"
    sendgrid = "sendgrid"
    postmark = "postmark"
    mailgun = "mailgun"


class Ignored(BaseModel):
    """A valid record of an event the pipeline does not store, such as a delivery."""

    model_config = ConfigDict(frozen=True)

    source: str
    line: int
    reason: str


ParsedRecord: TypeAlias = NormalisedEvent | Malformed | Ignored


class RecordError(Exception):
    """Why one record is malformed; `parse_record` turns it into a `Malformed`."""


# A bounce's SMTP reply is worth keeping; a provider's full dump of the message is not.
_MAX_DIAGNOSTIC = 1000
_EPOCH = re.compile(r"\d+(?:\.\d+)?")


def new_event(
    kind: EngagementType,
    occurred_at: datetime,
    provider: EventFormat,
    source: str,
    line: int,
    *,
    event_id: str | None = None,
    send_id: str | None = None,
    message_id: str | None = None,
    email: str | None = None,
    url: str | None = None,
    bounce_kind: BounceKind | None = None,
    diagnostic: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
    provider_machine: bool = False,
) -> NormalisedEvent:
    return NormalisedEvent(
        type=kind,
        occurred_at=occurred_at,
        provider=provider.value,
        source=source,
        provider_event_id=event_id,
        send_id=send_id,
        message_id=message_id,
        references=(),
        email=email,
        url=url,
        bounce_kind=bounce_kind,
        diagnostic=diagnostic[:_MAX_DIAGNOSTIC] if diagnostic else None,
        line=line,
        user_agent=user_agent,
        ip=ip,
        provider_machine=provider_machine,
    )


def text_field(value: Any, field: str) -> str | None:
    """A stripped string, None when absent or blank; ids sent as numbers become strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RecordError(f"{field}: not text")


def flag_field(value: Any, field: str) -> bool:
    """A provider's true/false flag; absent is false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise RecordError(f"{field}: not true or false")


def event_name(value: Any, field: str) -> str:
    """A provider's event name, checked to be text before it is looked up."""
    if value is None or value == "":
        raise RecordError(f"{field}: missing")
    if not isinstance(value, str):
        raise RecordError(f"{field}: unknown type {value!r}")
    return value


def object_field(record: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = record.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"{field}: not an object")
    return value


def time_field(value: Any, field: str) -> datetime:
    """An aware UTC datetime from ISO 8601 with a zone, or from epoch seconds."""
    if value is None or value == "":
        raise RecordError(f"{field}: missing")
    try:
        if isinstance(value, str):
            value = value.strip()
            if _EPOCH.fullmatch(value):
                return datetime.fromtimestamp(float(value), UTC)
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise RecordError(f"{field}: timestamp has no time zone")
            return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise RecordError(f"{field}: not a date")


def email_field(value: Any, field: str) -> str | None:
    text = text_field(value, field)
    if text is None:
        return None
    # str methods, not a regex: this runs for nearly every record of a 200,000-line file.
    if "@" not in text or " " in text or not text.isprintable():
        raise RecordError(f"{field}: not an address")
    return text.lower()


def message_id_field(value: Any, field: str) -> str | None:
    """`<local@domain>`, whether or not the source kept the angle brackets."""
    text = text_field(value, field)
    if text is None:
        return None
    inner = text[1:-1] if text[0] == "<" and text[-1] == ">" else text
    if "@" not in inner or " " in inner or "<" in inner or ">" in inner or not inner.isprintable():
        raise RecordError(f"{field}: not a Message-ID")
    return f"<{inner}>"


def joined(separator: str, *parts: str | None) -> str | None:
    return separator.join(part for part in parts if part) or None
