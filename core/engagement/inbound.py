"""Inbound mail (replies and bounces) classified: what one message says happened.

Every message becomes one `NormalisedEvent` (a reply, an auto-reply or a bounce), a `Malformed`
naming why it could not be read, or None when there is nothing to record. Headers and delivery
reports decide; a reply or auto-reply also carries its subject and new text (quoted thread and
signature stripped) for its classification, which is never stored. Reading the messages from
a Maildir, an mbox or IMAP is `core.engagement.inbound_sources`.
"""

import email
import email.errors
import email.policy
import re
import unicodedata
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import TypedDict

from core.engagement.events import BounceKind, Malformed, NormalisedEvent
from core.replies.reply_text import reply_content
from core.statuses import EngagementType

__all__ = ["InboundResult", "classify_message"]

# What one message is: an event, a message that could not be read, or nothing to record.
InboundResult = NormalisedEvent | Malformed | None

# The provider of every inbound event; dedupe keys already stored begin with it, so it stays.
_PROVIDER = "mailbox"
# Diagnostics come from remote servers; a bound keeps EngagementEvent.metadata small.
_MAX_DIAGNOSTIC = 500
_MESSAGE_ID_RE = re.compile(r"<([^<>\s]+)>")
# A line of a plain-text bounce that carries an SMTP reply or enhanced status code.
_DIAGNOSTIC_LINE_RE = re.compile(r"\b[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}\b|\b[45]\.\d\.\d{1,3}\b")
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
_BOUNCE_SUBJECT_RE = re.compile(
    _SUBJECT_PREFIX + r"(?:undelivered mail returned to sender|"
    r"delivery status notification \(failure\)|mail delivery failed|undeliverable|"
    r"returned mail|failure notice|delivery failure)",
    re.IGNORECASE,
)
_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster"})
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
        return _delivery_status_event(message, own_id, base)
    sender = _sender(message)
    if sender is not None and sender.partition("@")[0] in _DAEMON_LOCAL_PARTS:
        return _plain_bounce_event(message, own_id, base)
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
    return message.get_content_type() == "multipart/report" and report_type == "delivery-status"


def _delivery_status_event(
    message: EmailMessage, own_id: str | None, base: _Origin
) -> InboundResult:
    """An RFC 3464 DSN: the first failed recipient, else the first delayed one."""
    recipients = _recipient_blocks(message)
    actions = [str(block.get("Action", "")).strip().lower() for block in recipients]
    if not any(action in ("failed", "delayed") for action in actions):
        if not any(actions):
            raise _UnreadableError("message/delivery-status: no recipient with an Action field")
        return None  # delivered, relayed or expanded: nothing went wrong
    action = "failed" if "failed" in actions else "delayed"
    block = recipients[actions.index(action)]
    status = str(block.get("Status", "")).strip()
    # A failure after retries ran out (4.4.7 expired, 4.2.2 still full) stays a soft bounce.
    hard = action == "failed" and not status.startswith("4.")
    diagnostic = _diagnostic(str(block.get("Diagnostic-Code", ""))) or status or None
    message_id = _original_message_id(message)
    recipient = _typed_address(str(block.get("Final-Recipient", "")))
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
    """The Message-ID of the returned original (message/rfc822 or text/rfc822-headers)."""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            return _returned_message_id(part)
        if content_type == "text/rfc822-headers":
            headers = email.message_from_string(_text(part), policy=email.policy.default)
            return _first_message_id(headers.get("Message-ID"))
    return None


def _returned_message_id(part: Message) -> str | None:
    """The Message-ID of the message a message/rfc822 part holds."""
    embedded = part.get_payload()
    if isinstance(embedded, list) and embedded and isinstance(embedded[0], Message):
        return _first_message_id(embedded[0].get("Message-ID"))
    return None


def _plain_bounce_event(message: EmailMessage, own_id: str | None, base: _Origin) -> InboundResult:
    """A bounce in prose from MAILER-DAEMON or postmaster: hard when its subject is a failure."""
    subject = _normalised(str(message.get("Subject", "")))
    if not _BOUNCE_SUBJECT_RE.match(subject):
        return None  # delay warnings and other server notices
    message_id, diagnostic = _scan_plain_bounce(message)
    failed = getaddresses([str(value) for value in message.get_all("X-Failed-Recipients", [])])
    recipient = next((addr.lower() for _, addr in failed if "@" in addr), None)
    if message_id is None and recipient is None:
        return None
    return NormalisedEvent(
        type=EngagementType.bounce,
        occurred_at=_occurred_at(message),
        provider_event_id=own_id,
        message_id=message_id,
        email=recipient,
        bounce_kind=BounceKind.hard,
        diagnostic=diagnostic,
        **base,
    )


def _scan_plain_bounce(message: EmailMessage) -> tuple[str | None, str | None]:
    """(the returned original's Message-ID, the first line quoting an SMTP status)."""
    message_id = diagnostic = None
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822" and message_id is None:
            message_id = _returned_message_id(part)
        elif content_type in ("text/plain", "text/rfc822-headers"):
            text = _text(part)
            if message_id is None and (found := _EMBEDDED_MESSAGE_ID_RE.search(text)):
                message_id = found.group(1)
            if diagnostic is None:
                rows = (row for row in text.splitlines() if _DIAGNOSTIC_LINE_RE.search(row))
                diagnostic = _diagnostic(next(rows, ""))
    return message_id, diagnostic


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


def _diagnostic(value: str) -> str | None:
    """A Diagnostic-Code without its type (`smtp;`), on one line, bounded."""
    text = " ".join(value.split())
    if ";" in text and " " not in text.partition(";")[0]:
        text = text.partition(";")[2].strip()
    return text[:_MAX_DIAGNOSTIC] or None


def _text(part: Message) -> str:
    """A text part's decoded content, or empty when its charset or encoding is unusable."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError):
        return ""
    return content if isinstance(content, str) else ""


def _normalised(text: str) -> str:
    # Encoded words may give decomposed accents or non-breaking spaces (`Réponse\xa0:`).
    return unicodedata.normalize("NFKC", text)
