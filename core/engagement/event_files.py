"""Engagement event files: every record read into a `NormalisedEvent`, or why not.

A record becomes a `NormalisedEvent`; a record that cannot be read becomes a `Malformed` naming
its line (its 1-based line in a JSONL or CSV file, its 1-based index in a JSON array) and the
field at fault; a valid record of an event the pipeline does not store (a delivery, a
processed notice) becomes an `Ignored`, so a run can count it. A bad record never stops the rest.

Containers, chosen by suffix:

- `.jsonl` / `.ndjson`: one JSON object per line, read line by line (blank lines are skipped);
- `.json`: a JSON array of objects, or a single object;
- `.csv`: the generic format only, with a header line naming the fields below; an empty cell is
  an absent field.

Each record's format is detected unless one is given: a SendGrid record has `sg_event_id`, or
`event` and `sg_message_id`; a Postmark record has `RecordType`; a Mailgun record has
`event-data` (a webhook body) or `event` and `log-level` (an event-API export); anything else
is generic.

The generic format
------------------

One JSON object (or CSV row) per event:

- `type`, required: `open`, `click`, `reply`, `auto_reply`, `bounce`, `unsubscribe` or
  `complaint`; also `opened`, `clicked`, `replied`, `bounced`, `unsubscribed` and
  `spam_complaint`; in any case.
- `occurredAt`, required: ISO 8601 with a time zone (`2025-03-04T09:15:00Z`,
  `2025-03-04T10:15:00+01:00`) or epoch seconds; a time without a zone is refused.
- `emailSendId`: the `EmailSend.id` the event is about.
- `messageId`: the Message-ID of our email, with or without its `<>`.
- `email`: the lead's address (kept lowercased).
- `eventId`: the source's own id for the event; the same id twice is one event.
- `url`: the link clicked.
- `bounceKind`: `hard` (the default for a bounce) or `soft`; ignored for other types.
- `diagnostic`: the bounce's SMTP reply, or any note worth keeping.
- `userAgent`, `ip`: who fetched the pixel or followed the link (opens and clicks), for telling
  a machine's from a person's (`core.engagement.machine`); never stored.

At least one of `emailSendId`, `messageId` and `email` is required to match the event to a send.
Other fields are ignored, so an export may carry its own columns. For example:

    {"type": "click", "occurredAt": "2025-03-04T09:15:00Z", "emailSendId": "9f2c…",
     "url": "https://example.com/pricing", "eventId": "evt-123"}

The provider formats are described in `core.engagement.provider_events`.
"""

import csv
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from core.engagement.event_records import (
    EventFormat,
    ParsedRecord,
    RecordError,
    email_field,
    message_id_field,
    new_event,
    text_field,
    time_field,
)
from core.engagement.events import BounceKind, Malformed
from core.engagement.provider_events import parse_mailgun, parse_postmark, parse_sendgrid
from core.statuses import EngagementType

_SURROGATES = re.compile("[\udc80-\udcff]")


class EventFileError(ValueError):
    """The whole file is unusable (its suffix, its JSON, its CSV header); nothing was read."""


_GENERIC_TYPES = {
    **{member.value: member for member in EngagementType},
    "opened": EngagementType.open,
    "clicked": EngagementType.click,
    "replied": EngagementType.reply,
    "bounced": EngagementType.bounce,
    "unsubscribed": EngagementType.unsubscribe,
    "spam_complaint": EngagementType.complaint,
}
_CSV_REQUIRED = ("type", "occurredAt")


def detect_format(record: Mapping[str, Any]) -> EventFormat:
    """The format a record is written in, from the keys only its format has."""
    if "sg_event_id" in record or ("event" in record and "sg_message_id" in record):
        return EventFormat.sendgrid
    if "RecordType" in record:
        return EventFormat.postmark
    if "event-data" in record or ("event" in record and "log-level" in record):
        return EventFormat.mailgun
    return EventFormat.generic


def read_event_file(
    path: Path, fmt: EventFormat | None = None, *, source: str | None = None
) -> Iterator[ParsedRecord]:
    """Every record of an event file, in order, as an event, a `Malformed` or an `Ignored`.

    `fmt` None detects the format of each record. `source` defaults to `file:<name>`. A wrong
    suffix, or a provider format for a CSV, raises `EventFileError` at once; a `.json` that is
    not JSON, or a CSV header without `type` and `occurredAt`, raises it when iteration starts.
    """
    source = source or f"file:{path.name}"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, fmt, source)
    if suffix == ".json":
        return _read_json(path, fmt, source)
    if suffix == ".csv":
        if fmt not in (None, EventFormat.generic):
            raise EventFileError(f"{path.name}: a CSV holds the generic format only, not {fmt}")
        return _read_csv(path, source)
    raise EventFileError(
        f"{path.name}: unknown suffix {path.suffix!r}; expected .jsonl, .ndjson, .json or .csv"
    )


def parse_record(
    record: Mapping[str, Any], fmt: EventFormat, *, source: str, line: int
) -> ParsedRecord:
    """One record read as `fmt`: the event, or why it is malformed, or why it is not stored."""
    try:
        return _PARSERS[fmt](record, source, line)
    except RecordError as exc:
        return Malformed(source=source, line=line, reason=str(exc))


def _read_jsonl(path: Path, fmt: EventFormat | None, source: str) -> Iterator[ParsedRecord]:
    # Bytes, not text: json.loads decodes them itself, and a line that is not UTF-8 becomes one
    # Malformed instead of a decoding error that would end the whole file.
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:
                yield Malformed(source=source, line=line, reason="record: not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                if raw.strip():
                    reason = f"record: not valid JSON ({exc.msg}, column {exc.colno})"
                    yield Malformed(source=source, line=line, reason=reason)
                continue
            yield _parse_any(record, fmt, source, line)


def _read_json(path: Path, fmt: EventFormat | None, source: str) -> Iterator[ParsedRecord]:
    try:
        document = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise EventFileError(f"{path.name}: not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise EventFileError(
            f"{path.name}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise EventFileError(f"{path.name}: expected a JSON array of objects, or one object")
    for index, record in enumerate(document, start=1):
        yield _parse_any(record, fmt, source, index)


def _read_csv(path: Path, source: str) -> Iterator[ParsedRecord]:
    # The csv module, not pandas: pandas stops the whole read at a row with too many fields and
    # loses the line numbers of rows holding quoted line breaks; here each row keeps its line.
    # surrogateescape keeps bytes that are not UTF-8 visible, so only their row is refused.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            raise EventFileError(f"{path.name}: line 1: not a CSV header ({exc})") from None
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise EventFileError(
                f"{path.name}: line 1: columns appear twice: {', '.join(repeated)}"
            )
        missing = [name for name in _CSV_REQUIRED if name not in header]
        if missing:
            raise EventFileError(f"{path.name}: line 1: no {' or '.join(missing)} column")
        last = 1
        while True:
            line = last + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last = reader.line_num
                yield Malformed(source=source, line=line, reason=f"record: not CSV ({exc})")
                continue
            last = reader.line_num
            if not any(values):  # a blank line, or a row of empty cells
                continue
            if len(values) != len(header):
                reason = f"record: has {len(values)} fields, the header has {len(header)}"
                yield Malformed(source=source, line=line, reason=reason)
                continue
            if _SURROGATES.search("".join(values)):
                field = next(
                    n for n, v in zip(header, values, strict=True) if _SURROGATES.search(v)
                )
                yield Malformed(source=source, line=line, reason=f"{field}: not valid UTF-8")
                continue
            record = dict(zip(header, values, strict=True))
            yield parse_record(record, EventFormat.generic, source=source, line=line)


def _parse_any(record: Any, fmt: EventFormat | None, source: str, line: int) -> ParsedRecord:
    if not isinstance(record, dict):
        return Malformed(source=source, line=line, reason="record: not a JSON object")
    return parse_record(record, fmt or detect_format(record), source=source, line=line)


def _parse_generic(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    raw_type = record.get("type")
    if raw_type is None or raw_type == "":
        raise RecordError("type: missing")
    kind = _GENERIC_TYPES.get(raw_type.strip().lower()) if isinstance(raw_type, str) else None
    if kind is None:
        raise RecordError(f"type: unknown type {raw_type!r}")
    occurred_at = time_field(record.get("occurredAt"), "occurredAt")
    send_id = text_field(record.get("emailSendId"), "emailSendId")
    message_id = message_id_field(record.get("messageId"), "messageId")
    email = email_field(record.get("email"), "email")
    if not (send_id or message_id or email):
        raise RecordError("no emailSendId, messageId or email to match a send")
    bounce_kind = None
    if kind is EngagementType.bounce:
        raw_kind = text_field(record.get("bounceKind"), "bounceKind")
        if raw_kind is None:
            bounce_kind = BounceKind.hard
        elif raw_kind.lower() in ("hard", "soft"):
            bounce_kind = BounceKind(raw_kind.lower())
        else:
            raise RecordError(f"bounceKind: {raw_kind!r} is not hard or soft")
    return new_event(
        kind,
        occurred_at,
        EventFormat.generic,
        source,
        line,
        event_id=text_field(record.get("eventId"), "eventId"),
        send_id=send_id,
        message_id=message_id,
        email=email,
        url=text_field(record.get("url"), "url"),
        bounce_kind=bounce_kind,
        diagnostic=text_field(record.get("diagnostic"), "diagnostic"),
        user_agent=text_field(record.get("userAgent"), "userAgent"),
        ip=text_field(record.get("ip"), "ip"),
    )


_PARSERS: dict[EventFormat, Callable[[Mapping[str, Any], str, int], ParsedRecord]] = {
    EventFormat.generic: _parse_generic,
    EventFormat.sendgrid: parse_sendgrid,
    EventFormat.postmark: parse_postmark,
    EventFormat.mailgun: parse_mailgun,
}
