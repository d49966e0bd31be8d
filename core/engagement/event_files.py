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

At least one of `emailSendId`, `messageId` and `email` is required to match the event to a send.
Other fields are ignored, so an export may carry its own columns. For example:

    {"type": "click", "occurredAt": "2025-03-04T09:15:00Z", "emailSendId": "9f2c…",
     "url": "https://example.com/pricing", "eventId": "evt-123"}

Providers
---------

- SendGrid (Event Webhook): `open`, `click`, `bounce` (hard; soft when its `type` is
  `blocked`), `blocked` and `deferred` (soft bounces), `dropped` for a "Bounced Address" (hard
  bounce), `spamreport` (complaint), `unsubscribe` and `group_unsubscribe`. `processed`,
  `delivered`, `group_resubscribe` and other drops are ignored. `sg_event_id` is the event id,
  the `send_id` custom argument the send, `smtp-id` the Message-ID.
- Postmark (webhooks): `Open`; `Click` (`OriginalLink` is the URL; `ClickLocation` only says
  HTML or Text); `SpamComplaint` (complaint); `Bounce` by its `Type`: `HardBounce`,
  `BadEmailAddress` and `ManuallyDeactivated` are hard bounces, `SoftBounce`, `Transient`,
  `Undeliverable`, `DnsError`, `SpamNotification`, `ChallengeVerification`, `Blocked`,
  `DMARCPolicy` and `Unknown` soft ones, `AutoResponder` an auto reply, `Unsubscribe` an
  unsubscribe and `SpamComplaint` a complaint, while `Subscribe`, `AddressChange`,
  `OpenRelayTest`, `VirusNotification`, `Unconfirmed`, `SMTPApiError`, `InboundError` and
  `TemplateRenderingFailed` are ignored; a `SubscriptionChange` that suppresses for
  `ManualSuppression` (how Postmark records an unsubscribe) is an unsubscribe. `Delivery`,
  reactivations and suppressions for a hard bounce or a complaint (their own Bounce or
  SpamComplaint record reports them) are ignored. `Metadata.send_id` is the send; the bounce `ID`
  is the event id. Postmark's `MessageID` is Postmark's own id, not our Message-ID, and an open
  or a click has no id of its own, so those are keyed by their content.
- Mailgun (webhooks, or event-API exports of bare `event-data`): `opened`, `clicked`,
  `complained`, `unsubscribed`, `failed` (hard bounce when `severity` is `permanent`, soft when
  `temporary`). `accepted`, `delivered`, `rejected`, `stored` and the mailing-list events are
  ignored. `id` is the event id, `user-variables.send_id` the send, the `message-id` header our
  Message-ID (Mailgun drops its `<>`). The webhook `signature` is checked where webhooks are
  received, not here.

An event name or type not listed here is malformed, so a new one shows up in a run's counts
instead of vanishing. Every time becomes an aware UTC datetime.
"""

import csv
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
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


class EventFileError(ValueError):
    """The whole file is unusable (its suffix, its JSON, its CSV header); nothing was read."""


ParsedRecord: TypeAlias = NormalisedEvent | Malformed | Ignored


class _RecordError(Exception):
    """Why one record is malformed; `parse_record` turns it into a `Malformed`."""


# A bounce's SMTP reply is worth keeping; a provider's full dump of the message is not.
_MAX_DIAGNOSTIC = 1000
_EPOCH = re.compile(r"\d+(?:\.\d+)?")
_SURROGATES = re.compile("[\udc80-\udcff]")

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

_SENDGRID_TYPES = {
    "open": EngagementType.open,
    "click": EngagementType.click,
    "spamreport": EngagementType.complaint,
    "unsubscribe": EngagementType.unsubscribe,
    "group_unsubscribe": EngagementType.unsubscribe,
}
_SENDGRID_IGNORED = frozenset({"processed", "delivered", "group_resubscribe"})

# Postmark bounce Types (postmarkapp.com/developer/api/bounce-api#bounce-types). The ignored ones
# say nothing about the lead (a subscribe request, a virus warning) or are our own failures (an
# API error, a template that did not render), and no mail reached the lead.
_POSTMARK_BOUNCES: dict[str, tuple[EngagementType, BounceKind | None]] = {
    "HardBounce": (EngagementType.bounce, BounceKind.hard),
    "BadEmailAddress": (EngagementType.bounce, BounceKind.hard),
    "ManuallyDeactivated": (EngagementType.bounce, BounceKind.hard),
    "SoftBounce": (EngagementType.bounce, BounceKind.soft),
    "Transient": (EngagementType.bounce, BounceKind.soft),
    "Undeliverable": (EngagementType.bounce, BounceKind.soft),
    "DnsError": (EngagementType.bounce, BounceKind.soft),
    "SpamNotification": (EngagementType.bounce, BounceKind.soft),
    "ChallengeVerification": (EngagementType.bounce, BounceKind.soft),
    "Blocked": (EngagementType.bounce, BounceKind.soft),
    "DMARCPolicy": (EngagementType.bounce, BounceKind.soft),
    # Postmark could not classify the reply; soft, so one odd NDR never stops a lead for good.
    "Unknown": (EngagementType.bounce, BounceKind.soft),
    "AutoResponder": (EngagementType.auto_reply, None),
    "Unsubscribe": (EngagementType.unsubscribe, None),
    "SpamComplaint": (EngagementType.complaint, None),
}
_POSTMARK_IGNORED_BOUNCES = frozenset(
    {
        "Subscribe",
        "AddressChange",
        "OpenRelayTest",
        "VirusNotification",
        "Unconfirmed",
        "SMTPApiError",
        "InboundError",
        "TemplateRenderingFailed",
    }
)

_MAILGUN_TYPES = {
    "opened": EngagementType.open,
    "clicked": EngagementType.click,
    "complained": EngagementType.complaint,
    "unsubscribed": EngagementType.unsubscribe,
}
_MAILGUN_IGNORED = frozenset(
    {
        "accepted",
        "delivered",
        "rejected",
        "stored",
        "list_member_uploaded",
        "list_member_upload_error",
        "list_uploaded",
    }
)
_MAILGUN_SEVERITY = {"permanent": BounceKind.hard, "temporary": BounceKind.soft}


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
    except _RecordError as exc:
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
        raise _RecordError("type: missing")
    kind = _GENERIC_TYPES.get(raw_type.strip().lower()) if isinstance(raw_type, str) else None
    if kind is None:
        raise _RecordError(f"type: unknown type {raw_type!r}")
    occurred_at = _time(record.get("occurredAt"), "occurredAt")
    send_id = _text(record.get("emailSendId"), "emailSendId")
    message_id = _message_id(record.get("messageId"), "messageId")
    email = _email(record.get("email"), "email")
    if not (send_id or message_id or email):
        raise _RecordError("no emailSendId, messageId or email to match a send")
    bounce_kind = None
    if kind is EngagementType.bounce:
        raw_kind = _text(record.get("bounceKind"), "bounceKind")
        if raw_kind is None:
            bounce_kind = BounceKind.hard
        elif raw_kind.lower() in ("hard", "soft"):
            bounce_kind = BounceKind(raw_kind.lower())
        else:
            raise _RecordError(f"bounceKind: {raw_kind!r} is not hard or soft")
    return _event(
        kind,
        occurred_at,
        EventFormat.generic,
        source,
        line,
        event_id=_text(record.get("eventId"), "eventId"),
        send_id=send_id,
        message_id=message_id,
        email=email,
        url=_text(record.get("url"), "url"),
        bounce_kind=bounce_kind,
        diagnostic=_text(record.get("diagnostic"), "diagnostic"),
    )


def _parse_sendgrid(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    event = _event_name(record.get("event"), "event")
    if event in _SENDGRID_IGNORED:
        return Ignored(source=source, line=line, reason=f"event: {event!r} is not stored")
    reason = _text(record.get("reason"), "reason")
    bounce_kind = None
    if event in _SENDGRID_TYPES:
        kind = _SENDGRID_TYPES[event]
    elif event in ("bounce", "blocked", "deferred"):
        kind = EngagementType.bounce
        hard = event == "bounce" and record.get("type") != "blocked"
        bounce_kind = BounceKind.hard if hard else BounceKind.soft
    elif event == "dropped":
        if reason is None or "bounced address" not in reason.lower():
            return Ignored(
                source=source,
                line=line,
                reason=f"event: 'dropped' ({reason or 'no reason'}) is not stored",
            )
        kind, bounce_kind = EngagementType.bounce, BounceKind.hard
    else:
        raise _RecordError(f"event: unknown type {event!r}")
    occurred_at = _time(record.get("timestamp"), "timestamp")
    send_id = _text(record.get("send_id"), "send_id")
    message_id = _message_id(record.get("smtp-id"), "smtp-id")
    email = _email(record.get("email"), "email")
    if not (send_id or message_id or email):
        raise _RecordError("no send_id, smtp-id or email to match a send")
    diagnostic = None
    if kind is EngagementType.bounce:
        reply = reason or _text(record.get("response"), "response")
        status = _text(record.get("status"), "status")
        attempt = _text(record.get("attempt"), "attempt")
        diagnostic = _join(
            " ",
            # The reason usually repeats the enhanced status code; say it once.
            status if status and status not in (reply or "") else None,
            reply,
            f"(attempt {attempt})" if attempt else None,
        )
    return _event(
        kind,
        occurred_at,
        EventFormat.sendgrid,
        source,
        line,
        event_id=_text(record.get("sg_event_id"), "sg_event_id"),
        send_id=send_id,
        message_id=message_id,
        email=email,
        url=_text(record.get("url"), "url") if kind is EngagementType.click else None,
        bounce_kind=bounce_kind,
        diagnostic=diagnostic,
    )


def _parse_postmark(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    record_type = record.get("RecordType")
    bounce_kind = None
    event_id = diagnostic = url = None
    if record_type == "Open":
        kind, when, address = EngagementType.open, "ReceivedAt", "Recipient"
    elif record_type == "Click":
        kind, when, address = EngagementType.click, "ReceivedAt", "Recipient"
        url = _text(record.get("OriginalLink"), "OriginalLink")
    elif record_type in ("Bounce", "SpamComplaint"):
        when, address = "BouncedAt", "Email"
        bounce_type = _text(record.get("Type"), "Type")
        if record_type == "SpamComplaint":
            kind = EngagementType.complaint
        elif bounce_type in _POSTMARK_IGNORED_BOUNCES:
            return Ignored(source=source, line=line, reason=f"Type: {bounce_type!r} is not stored")
        elif bounce_type in _POSTMARK_BOUNCES:
            kind, bounce_kind = _POSTMARK_BOUNCES[bounce_type]
        elif bounce_type is None:
            raise _RecordError("Type: missing")
        else:
            raise _RecordError(f"Type: unknown bounce type {bounce_type!r}")
        event_id = _text(record.get("ID"), "ID")
        details = _text(record.get("Details"), "Details")
        diagnostic = _join(
            ": ", bounce_type, details or _text(record.get("Description"), "Description")
        )
    elif record_type == "SubscriptionChange":
        reason = _text(record.get("SuppressionReason"), "SuppressionReason")
        if record.get("SuppressSending") is not True or reason != "ManualSuppression":
            return Ignored(
                source=source,
                line=line,
                reason=f"SubscriptionChange: {reason or 'reactivation'} is not stored",
            )
        kind, when, address = EngagementType.unsubscribe, "ChangedAt", "Recipient"
        diagnostic = _join(" by ", reason, _text(record.get("Origin"), "Origin"))
    elif record_type == "Delivery":
        return Ignored(source=source, line=line, reason="RecordType: 'Delivery' is not stored")
    else:
        raise _RecordError(f"RecordType: unknown type {record_type!r}")
    occurred_at = _time(record.get(when), when)
    send_id = _text(_object(record, "Metadata").get("send_id"), "Metadata.send_id")
    email = _email(record.get(address), address)
    if not (send_id or email):
        raise _RecordError(f"no Metadata.send_id or {address} to match a send")
    return _event(
        kind,
        occurred_at,
        EventFormat.postmark,
        source,
        line,
        event_id=event_id,
        send_id=send_id,
        email=email,
        url=url,
        bounce_kind=bounce_kind,
        diagnostic=diagnostic,
    )


def _parse_mailgun(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    data = _object(record, "event-data") if "event-data" in record else record
    event = _event_name(data.get("event"), "event")
    if event in _MAILGUN_IGNORED:
        return Ignored(source=source, line=line, reason=f"event: {event!r} is not stored")
    bounce_kind = diagnostic = None
    if event in _MAILGUN_TYPES:
        kind = _MAILGUN_TYPES[event]
    elif event == "failed":
        kind = EngagementType.bounce
        severity = _text(data.get("severity"), "severity")
        if severity not in _MAILGUN_SEVERITY:
            raise _RecordError(f"severity: {severity!r} is not permanent or temporary")
        bounce_kind = _MAILGUN_SEVERITY[severity]
        status = _object(data, "delivery-status")
        diagnostic = _join(
            " ",
            _text(status.get("code"), "delivery-status.code"),
            _text(status.get("message"), "delivery-status.message")
            or _text(status.get("description"), "delivery-status.description")
            or _text(data.get("reason"), "reason"),
        )
    else:
        raise _RecordError(f"event: unknown type {event!r}")
    occurred_at = _time(data.get("timestamp"), "timestamp")
    send_id = _text(_object(data, "user-variables").get("send_id"), "user-variables.send_id")
    headers = _object(_object(data, "message"), "headers")
    message_id = _message_id(headers.get("message-id"), "message-id")
    email = _email(data.get("recipient"), "recipient")
    if not (send_id or message_id or email):
        raise _RecordError("no user-variables.send_id, message-id or recipient to match a send")
    return _event(
        kind,
        occurred_at,
        EventFormat.mailgun,
        source,
        line,
        event_id=_text(data.get("id"), "id"),
        send_id=send_id,
        message_id=message_id,
        email=email,
        url=_text(data.get("url"), "url") if kind is EngagementType.click else None,
        bounce_kind=bounce_kind,
        diagnostic=diagnostic,
    )


_PARSERS: dict[EventFormat, Callable[[Mapping[str, Any], str, int], ParsedRecord]] = {
    EventFormat.generic: _parse_generic,
    EventFormat.sendgrid: _parse_sendgrid,
    EventFormat.postmark: _parse_postmark,
    EventFormat.mailgun: _parse_mailgun,
}


def _event(
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
    )


def _text(value: Any, field: str) -> str | None:
    """A stripped string, None when absent or blank; ids sent as numbers become strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _RecordError(f"{field}: not text")


def _event_name(value: Any, field: str) -> str:
    """A provider's event name, checked to be text before it is looked up."""
    if value is None or value == "":
        raise _RecordError(f"{field}: missing")
    if not isinstance(value, str):
        raise _RecordError(f"{field}: unknown type {value!r}")
    return value


def _object(record: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = record.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _RecordError(f"{field}: not an object")
    return value


def _time(value: Any, field: str) -> datetime:
    """An aware UTC datetime from ISO 8601 with a zone, or from epoch seconds."""
    if value is None or value == "":
        raise _RecordError(f"{field}: missing")
    try:
        if isinstance(value, str):
            value = value.strip()
            if _EPOCH.fullmatch(value):
                return datetime.fromtimestamp(float(value), UTC)
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise _RecordError(f"{field}: timestamp has no time zone")
            return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise _RecordError(f"{field}: not a date")


def _email(value: Any, field: str) -> str | None:
    text = _text(value, field)
    if text is None:
        return None
    # str methods, not a regex: this runs for nearly every record of a 200,000-line file.
    if "@" not in text or " " in text or not text.isprintable():
        raise _RecordError(f"{field}: not an address")
    return text.lower()


def _message_id(value: Any, field: str) -> str | None:
    """`<local@domain>`, whether or not the source kept the angle brackets."""
    text = _text(value, field)
    if text is None:
        return None
    inner = text[1:-1] if text[0] == "<" and text[-1] == ">" else text
    if "@" not in inner or " " in inner or "<" in inner or ">" in inner or not inner.isprintable():
        raise _RecordError(f"{field}: not a Message-ID")
    return f"<{inner}>"


def _join(separator: str, *parts: str | None) -> str | None:
    return separator.join(part for part in parts if part) or None
