"""Event records in the SendGrid, Postmark and Mailgun formats, read into events.

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

Opens and clicks also carry what tells a machine's from a person's (`core.engagement.machine`):
SendGrid's `useragent`, `ip` and `sg_machine_open`; Postmark's `UserAgent` and `Geo.IP`;
Mailgun's `client-info.user-agent`, `client-info.bot` and `ip`.

An event name or type not listed here is malformed, so a new one shows up in a run's counts
instead of vanishing. Every time becomes an aware UTC datetime.
"""

from collections.abc import Mapping
from typing import Any

from core.engagement.event_records import (
    EventFormat,
    Ignored,
    ParsedRecord,
    RecordError,
    email_field,
    event_name,
    flag_field,
    joined,
    message_id_field,
    new_event,
    object_field,
    text_field,
    time_field,
)
from core.engagement.events import BounceKind
from core.statuses import EngagementType

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


def parse_sendgrid(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    event = event_name(record.get("event"), "event")
    if event in _SENDGRID_IGNORED:
        return Ignored(source=source, line=line, reason=f"event: {event!r} is not stored")
    reason = text_field(record.get("reason"), "reason")
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
        raise RecordError(f"event: unknown type {event!r}")
    occurred_at = time_field(record.get("timestamp"), "timestamp")
    send_id = text_field(record.get("send_id"), "send_id")
    message_id = message_id_field(record.get("smtp-id"), "smtp-id")
    email = email_field(record.get("email"), "email")
    if not (send_id or message_id or email):
        raise RecordError("no send_id, smtp-id or email to match a send")
    diagnostic = None
    if kind is EngagementType.bounce:
        reply = reason or text_field(record.get("response"), "response")
        status = text_field(record.get("status"), "status")
        attempt = text_field(record.get("attempt"), "attempt")
        diagnostic = joined(
            " ",
            # The reason usually repeats the enhanced status code; say it once.
            status if status and status not in (reply or "") else None,
            reply,
            f"(attempt {attempt})" if attempt else None,
        )
    return new_event(
        kind,
        occurred_at,
        EventFormat.sendgrid,
        source,
        line,
        event_id=text_field(record.get("sg_event_id"), "sg_event_id"),
        send_id=send_id,
        message_id=message_id,
        email=email,
        url=text_field(record.get("url"), "url") if kind is EngagementType.click else None,
        bounce_kind=bounce_kind,
        diagnostic=diagnostic,
        user_agent=text_field(record.get("useragent"), "useragent"),
        ip=text_field(record.get("ip"), "ip"),
        provider_machine=flag_field(record.get("sg_machine_open"), "sg_machine_open"),
    )


def parse_postmark(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    record_type = record.get("RecordType")
    bounce_kind = None
    event_id = diagnostic = url = user_agent = ip = None
    if record_type in ("Open", "Click"):
        user_agent = text_field(record.get("UserAgent"), "UserAgent")
        ip = text_field(object_field(record, "Geo").get("IP"), "Geo.IP")
    if record_type == "Open":
        kind, when, address = EngagementType.open, "ReceivedAt", "Recipient"
    elif record_type == "Click":
        kind, when, address = EngagementType.click, "ReceivedAt", "Recipient"
        url = text_field(record.get("OriginalLink"), "OriginalLink")
    elif record_type in ("Bounce", "SpamComplaint"):
        when, address = "BouncedAt", "Email"
        bounce_type = text_field(record.get("Type"), "Type")
        if record_type == "SpamComplaint":
            kind = EngagementType.complaint
        elif bounce_type in _POSTMARK_IGNORED_BOUNCES:
            return Ignored(source=source, line=line, reason=f"Type: {bounce_type!r} is not stored")
        elif bounce_type in _POSTMARK_BOUNCES:
            kind, bounce_kind = _POSTMARK_BOUNCES[bounce_type]
        elif bounce_type is None:
            raise RecordError("Type: missing")
        else:
            raise RecordError(f"Type: unknown bounce type {bounce_type!r}")
        event_id = text_field(record.get("ID"), "ID")
        details = text_field(record.get("Details"), "Details")
        diagnostic = joined(
            ": ", bounce_type, details or text_field(record.get("Description"), "Description")
        )
    elif record_type == "SubscriptionChange":
        reason = text_field(record.get("SuppressionReason"), "SuppressionReason")
        if record.get("SuppressSending") is not True or reason != "ManualSuppression":
            return Ignored(
                source=source,
                line=line,
                reason=f"SubscriptionChange: {reason or 'reactivation'} is not stored",
            )
        kind, when, address = EngagementType.unsubscribe, "ChangedAt", "Recipient"
        diagnostic = joined(" by ", reason, text_field(record.get("Origin"), "Origin"))
    elif record_type == "Delivery":
        return Ignored(source=source, line=line, reason="RecordType: 'Delivery' is not stored")
    else:
        raise RecordError(f"RecordType: unknown type {record_type!r}")
    occurred_at = time_field(record.get(when), when)
    send_id = text_field(object_field(record, "Metadata").get("send_id"), "Metadata.send_id")
    email = email_field(record.get(address), address)
    if not (send_id or email):
        raise RecordError(f"no Metadata.send_id or {address} to match a send")
    return new_event(
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
        user_agent=user_agent,
        ip=ip,
    )


def parse_mailgun(record: Mapping[str, Any], source: str, line: int) -> ParsedRecord:
    data = object_field(record, "event-data") if "event-data" in record else record
    event = event_name(data.get("event"), "event")
    if event in _MAILGUN_IGNORED:
        return Ignored(source=source, line=line, reason=f"event: {event!r} is not stored")
    bounce_kind = diagnostic = None
    if event in _MAILGUN_TYPES:
        kind = _MAILGUN_TYPES[event]
    elif event == "failed":
        kind = EngagementType.bounce
        severity = text_field(data.get("severity"), "severity")
        if severity not in _MAILGUN_SEVERITY:
            raise RecordError(f"severity: {severity!r} is not permanent or temporary")
        bounce_kind = _MAILGUN_SEVERITY[severity]
        status = object_field(data, "delivery-status")
        diagnostic = joined(
            " ",
            text_field(status.get("code"), "delivery-status.code"),
            text_field(status.get("message"), "delivery-status.message")
            or text_field(status.get("description"), "delivery-status.description")
            or text_field(data.get("reason"), "reason"),
        )
    else:
        raise RecordError(f"event: unknown type {event!r}")
    occurred_at = time_field(data.get("timestamp"), "timestamp")
    send_id = text_field(
        object_field(data, "user-variables").get("send_id"), "user-variables.send_id"
    )
    headers = object_field(object_field(data, "message"), "headers")
    message_id = message_id_field(headers.get("message-id"), "message-id")
    email = email_field(data.get("recipient"), "recipient")
    client = object_field(data, "client-info")
    if not (send_id or message_id or email):
        raise RecordError("no user-variables.send_id, message-id or recipient to match a send")
    return new_event(
        kind,
        occurred_at,
        EventFormat.mailgun,
        source,
        line,
        event_id=text_field(data.get("id"), "id"),
        send_id=send_id,
        message_id=message_id,
        email=email,
        url=text_field(data.get("url"), "url") if kind is EngagementType.click else None,
        bounce_kind=bounce_kind,
        diagnostic=diagnostic,
        user_agent=text_field(client.get("user-agent"), "client-info.user-agent"),
        ip=text_field(data.get("ip"), "ip"),
        provider_machine=_mailgun_bot(client.get("bot")),
    )


def _mailgun_bot(value: Any) -> bool:
    """`client-info.bot`: `apple`, `gmail` or `generic` when Mailgun saw a bot, empty when not."""
    if isinstance(value, bool):
        return value
    return bool(text_field(value, "client-info.bot"))
