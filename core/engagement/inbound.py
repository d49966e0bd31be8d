"""Inbound mail (replies and bounces) classified: what one message says happened.

Every message becomes one `NormalisedEvent` (a reply, an auto-reply or a bounce), a `Malformed`
naming why it could not be read, or None when there is nothing to record. Headers, delivery
reports and a bounce's own words decide; a reply or auto-reply also carries its subject and new
text (quoted thread and signature stripped) for its classification, which is never stored.
Reading the messages from a Maildir, an mbox or IMAP is `core.engagement.inbound_sources`.

A bounce is read by the RFC 3464 reader here first; one it cannot read, and anything from a
mailbox that writes bounces (MAILER-DAEMON, postmaster, Exchange's system mailbox), then goes
to flufl.bounce and the prose reader (`core.engagement.bounces`). One that none of them
understands is Malformed with that reason, so the run's report lists it.
"""

import email
import email.errors
import email.policy
import re
import unicodedata
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import TypedDict

from core.engagement.bounces import (
    BounceReader,
    BounceReading,
    is_failure_subject,
    one_line_diagnostic,
    part_text,
    read_prose,
    read_with_flufl,
    writes_bounces,
)
from core.engagement.events import BounceKind, Malformed, NormalisedEvent
from core.replies.reply_text import reply_content
from core.statuses import EngagementType

__all__ = ["InboundResult", "classify_message"]

# What one message is: an event, a message that could not be read, or nothing to record.
InboundResult = NormalisedEvent | Malformed | None

# The provider of every inbound event; dedupe keys already stored begin with it, so it stays.
_PROVIDER = "mailbox"
_MESSAGE_ID_RE = re.compile(r"<([^<>\s]+)>")
_EMBEDDED_MESSAGE_ID_RE = re.compile(
    r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE
)
# Reply and forward prefixes clients put before an auto-reply's own subject.
_SUBJECT_PREFIX = r"^\s*(?:(?:re|aw|sv|tr|fw|fwd|wg)\s*:\s*)*\[?\s*"
_AUTO_REPLY_SUBJECT_RE = re.compile(
    _SUBJECT_PREFIX + r"(?:out of (?:the )?office|automatic reply|automatische antwort|"
    r"auto[- ]?reply|auto[- ]?response|abwesenheitsnotiz|réponse automatique|"
    r"i am out of the office|i'm out of the office)",
    re.IGNORECASE,
)
# A report that leaves out its report-type is read as a delivery report: a read receipt says
# what it is, and a mail server that forgets the parameter is still reporting a delivery.
_DELIVERY_REPORTS = frozenset({"delivery-status", ""})
_AUTO_REPLY_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
# Unreadable headers surface as these from the email package (including known parser bugs
# that raise IndexError or AttributeError on hostile input) and from unknown charsets.
_PARSE_ERRORS = (email.errors.MessageError, LookupError, ValueError, AttributeError)


class _Origin(TypedDict):
    """Where an event came from: the fields every inbound event shares."""

    provider: str
    source: str
    line: int


class _UnreadableError(Exception):
    """Raised inside classification; becomes a Malformed with this reason."""


def classify_message(raw: bytes, *, source: str, line: int) -> InboundResult:
    """One RFC 5322 message as a bounce, auto-reply or reply event.

    None when the message links to none of our emails and names no address to fall back on,
    or is a report with nothing to record (a delivery success, a read receipt, a notice from
    a mail server that is not a failure). Malformed when it has no headers or no usable time.
    """
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not message.keys():
        return Malformed(source=source, line=line, reason="no header fields: not an email")
    try:
        return _classify(message, source=source, line=line)
    except _UnreadableError as exc:
        return Malformed(source=source, line=line, reason=str(exc))
    except _PARSE_ERRORS as exc:
        return Malformed(source=source, line=line, reason=f"unparseable: {type(exc).__name__}")


def _classify(message: EmailMessage, *, source: str, line: int) -> InboundResult:
    base = _Origin(provider=_PROVIDER, source=source, line=line)
    own_id = _first_message_id(message.get("Message-ID"))
    if _is_delivery_report(message):
        try:
            return _delivery_status_event(message, own_id, base)
        except _UnreadableError as exc:
            return _fallback_bounce_event(message, own_id, base, why=str(exc))
    sender = _sender(message)
    if sender is not None and writes_bounces(sender):
        # Named by its local part only: a Malformed reason never carries an address.
        why = f"mail from {sender.partition('@')[0]}"
        return _fallback_bounce_event(message, own_id, base, why=why)
    if is_failure_subject(str(message.get("Subject", ""))):
        # A mail server or gateway with a sender name of its own (MDaemon, a virus scanner,
        # `<>`): a bounce when flufl.bounce finds the address that failed. The prose reader's
        # looser words are kept for mail that is a bounce for sure; this may be a person's.
        reading = read_with_flufl(message)
        if reading is not None and reading.recipient is not None:
            return _bounce_event(message, own_id, base, reading, _original_message_id(message))
    if message.get_content_type() == "multipart/report":
        return None  # read receipts and other reports: no person wrote these
    references = _references(message)
    if sender is None and not references:
        return None
    automatic = _has_auto_reply_headers(message)
    auto_subject = bool(_AUTO_REPLY_SUBJECT_RE.match(_normalised(str(message.get("Subject", "")))))
    kind = EngagementType.auto_reply if automatic or auto_subject else EngagementType.reply
    return NormalisedEvent(
        type=kind,
        occurred_at=_occurred_at(message),
        provider_event_id=own_id,
        references=references,
        email=sender,
        reply=reply_content(message, automatic=automatic),
        **base,
    )


def _is_delivery_report(message: EmailMessage) -> bool:
    report_type = str(message.get_param("report-type", "")).lower()
    return message.get_content_type() == "multipart/report" and report_type in _DELIVERY_REPORTS


def _delivery_status_event(
    message: EmailMessage, own_id: str | None, base: _Origin
) -> InboundResult:
    """An RFC 3464 DSN: the first failed recipient, else the first delayed one."""
    recipients = _recipient_blocks(message)
    # `failed (Bad destination mailbox address)`: a comment may follow the action.
    actions = [" ".join(str(block.get("Action", "")).split()[:1]).lower() for block in recipients]
    if not any(action in ("failed", "delayed") for action in actions):
        if not any(actions):
            raise _UnreadableError("message/delivery-status: no recipient with an Action field")
        return None  # delivered, relayed or expanded: nothing went wrong
    action = "failed" if "failed" in actions else "delayed"
    block = recipients[actions.index(action)]
    status = str(block.get("Status", "")).strip()
    # A failure after retries ran out (4.4.7 expired, 4.2.2 still full) stays a soft bounce.
    hard = action == "failed" and not status.startswith("4.")
    diagnostic = one_line_diagnostic(str(block.get("Diagnostic-Code", ""))) or status or None
    message_id = _original_message_id(message)
    # The address as we sent it, when the report gives it: Final-Recipient may be an alias the
    # lead's server expanded it to, or not an internet address at all (X.400).
    recipient = _typed_address(str(block.get("Original-Recipient", ""))) or _typed_address(
        str(block.get("Final-Recipient", ""))
    )
    if message_id is None and recipient is None:
        return None
    return NormalisedEvent(
        type=EngagementType.bounce,
        occurred_at=_occurred_at(message),
        provider_event_id=own_id,
        message_id=message_id,
        email=recipient,
        bounce_kind=BounceKind.hard if hard else BounceKind.soft,
        diagnostic=diagnostic,
        bounce_reader=BounceReader.rfc3464.value,
        **base,
    )


def _recipient_blocks(message: EmailMessage) -> list[Message]:
    """The per-recipient field blocks of the report (the per-message block comes first)."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            if not isinstance(blocks, list):
                break
            return [block for block in blocks[1:] if isinstance(block, Message)]
    raise _UnreadableError("multipart/report: no message/delivery-status part")


def _original_message_id(message: EmailMessage) -> str | None:
    """The Message-ID of the returned original: a message/rfc822 or text/rfc822-headers part,
    else the first one quoted in a text part (plain bounces paste the original below theirs).
    """
    quoted = None
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            return _returned_message_id(part)
        if content_type == "text/rfc822-headers":
            headers = email.message_from_string(part_text(part), policy=email.policy.default)
            return _first_message_id(headers.get("Message-ID"))
        found = (
            _EMBEDDED_MESSAGE_ID_RE.search(part_text(part))
            if content_type == "text/plain" and quoted is None
            else None
        )
        if found:
            quoted = found.group(1)
    return quoted


def _returned_message_id(part: Message) -> str | None:
    """The Message-ID of the message a message/rfc822 part holds."""
    embedded = part.get_payload()
    if isinstance(embedded, list) and embedded and isinstance(embedded[0], Message):
        return _first_message_id(embedded[0].get("Message-ID"))
    return None


def _fallback_bounce_event(
    message: EmailMessage, own_id: str | None, base: _Origin, *, why: str
) -> NormalisedEvent:
    """A bounce the RFC 3464 reader could not read: flufl.bounce, else the prose reader."""
    reading = read_with_flufl(message) or read_prose(message)
    message_id = _original_message_id(message)
    if reading is None or (reading.recipient is None and message_id is None):
        raise _UnreadableError(
            f"{why}: neither flufl.bounce nor the prose reader found a failed recipient"
            " or the Message-ID of ours it returns"
        )
    return _bounce_event(message, own_id, base, reading, message_id)


def _bounce_event(
    message: EmailMessage,
    own_id: str | None,
    base: _Origin,
    reading: BounceReading,
    message_id: str | None,
) -> NormalisedEvent:
    return NormalisedEvent(
        type=EngagementType.bounce,
        occurred_at=_occurred_at(message),
        provider_event_id=own_id,
        message_id=message_id,
        email=reading.recipient,
        bounce_kind=reading.kind,
        diagnostic=reading.diagnostic,
        bounce_reader=reading.reader.value,
        **base,
    )


def _has_auto_reply_headers(message: EmailMessage) -> bool:
    """RFC 3834 and the vendor headers that say no person wrote the message."""
    auto_submitted = str(message.get("Auto-Submitted", "")).split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return True
    if "X-Autoreply" in message or "X-Autorespond" in message:
        return True
    if str(message.get("Precedence", "")).strip().lower() in _AUTO_REPLY_PRECEDENCE:
        return True
    # Exchange marks its out-of-office replies "All" (which includes OOF) so no other
    # responder answers them in turn.
    suppress = str(message.get("X-Auto-Response-Suppress", "")).upper().split(",")
    return bool({"OOF", "ALL"} & {token.strip() for token in suppress})


def _references(message: EmailMessage) -> tuple[str, ...]:
    """In-Reply-To then References ids, each once, in order."""
    found: dict[str, None] = {}
    for name in ("In-Reply-To", "References"):
        for value in message.get_all(name, []):
            for match in _MESSAGE_ID_RE.finditer(str(value)):
                found.setdefault(f"<{match.group(1)}>", None)
    return tuple(found)


def _sender(message: EmailMessage) -> str | None:
    """The From address, lowercased; None when there is no usable one."""
    header = message.get("From")
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    for address in addresses:
        if address.username and address.domain:
            return str(address.addr_spec).lower()
    return None


def _occurred_at(message: EmailMessage) -> datetime:
    """The Date header when it has a zone, else the time our server received the message.

    A Date without a zone (or `-0000`, which Python reads as naive) falls back to the newest
    Received stamp, which our own server wrote. With neither, the event has no time to order
    it by, so the message is Malformed rather than given a guessed time.
    """
    stamps = [str(message.get("Date", ""))]
    stamps += [str(value).rpartition(";")[2] for value in message.get_all("Received", [])]
    for stamp in stamps:
        parsed = _aware(stamp)
        if parsed is not None:
            return parsed
    raise _UnreadableError("Date: missing or without zone, and no Received time")


def _aware(stamp: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(stamp.strip())
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _first_message_id(value: object) -> str | None:
    match = _MESSAGE_ID_RE.search(str(value)) if value is not None else None
    return f"<{match.group(1)}>" if match else None


def _typed_address(value: str) -> str | None:
    """`rfc822; Ada@X.com` as `ada@x.com` (the address type is dropped)."""
    address = value.rpartition(";")[2].strip().strip("<>").lower()
    return address if "@" in address else None


def _normalised(text: str) -> str:
    # Encoded words may give decomposed accents or non-breaking spaces (`Réponse\xa0:`).
    return unicodedata.normalize("NFKC", text)
