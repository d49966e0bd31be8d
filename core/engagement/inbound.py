"""The reply and bounce mailbox as an engagement source: Maildir, mbox or IMAP.

Every message becomes one `NormalisedEvent` (a reply, an auto-reply or a bounce), a `Malformed`
naming why it could not be read, or None when there is nothing to record. Only headers and
delivery reports are read; a body is never kept in any field.

Reading is strictly read-only (no file moved or deleted, no IMAP flag set): ingestion is
idempotent by dedupe key, so reading the same mailbox again is safe.
"""

import contextlib
import email
import email.errors
import email.policy
import imaplib
import mailbox
import re
import ssl
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import TypedDict

from core.engagement.events import BounceKind, Malformed, NormalisedEvent
from core.statuses import EngagementType

__all__ = ["IMAPSource", "MailboxError", "classify_message", "read_mail_path"]

Result = NormalisedEvent | Malformed | None

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
_IMAP_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMAP_UID_RE = re.compile(rb"\bUID (\d+)")


class MailboxError(ValueError):
    """The mailbox cannot be opened or read; str() names the setting to check."""


class _UnreadableError(Exception):
    """Raised inside classification; becomes a Malformed with this reason."""


def classify_message(raw: bytes, *, source: str, line: int) -> Result:
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


class _Origin(TypedDict):
    """The fields every event of one message shares: where it was read."""

    provider: str
    source: str
    line: int


def _classify(message: EmailMessage, *, source: str, line: int) -> Result:
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
    kind = EngagementType.auto_reply if _is_auto_reply(message) else EngagementType.reply
    return NormalisedEvent(
        type=kind,
        occurred_at=_occurred_at(message),
        provider_event_id=own_id,
        references=references,
        email=sender,
        **base,
    )


def _is_delivery_report(message: EmailMessage) -> bool:
    report_type = str(message.get_param("report-type", "")).lower()
    return message.get_content_type() == "multipart/report" and report_type == "delivery-status"


def _delivery_status_event(message: EmailMessage, own_id: str | None, base: _Origin) -> Result:
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


def _plain_bounce_event(message: EmailMessage, own_id: str | None, base: _Origin) -> Result:
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


def _is_auto_reply(message: EmailMessage) -> bool:
    """RFC 3834 and the vendor headers, then the subjects responders use by default."""
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
    if {"OOF", "ALL"} & {token.strip() for token in suppress}:
        return True
    return bool(_AUTO_REPLY_SUBJECT_RE.match(_normalised(str(message.get("Subject", "")))))


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
            return address.addr_spec.lower()
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


def read_mail_path(path: Path, *, source: str | None = None) -> Iterator[tuple[str, Result]]:
    """Every message of a Maildir (new/ and cur/) or an mbox file, as (key, result).

    Maildir keys are the file names without flags, in sorted (delivery time) order; mbox keys
    are 0, 1, … in file order. `line` in results is the 1-based position. Dotfiles are not
    messages. Nothing is moved, flagged or deleted.
    """
    if path.is_dir():
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise MailboxError(f"{path}: a directory without cur/ and new/ is not a Maildir")
        box: mailbox.Mailbox = mailbox.Maildir(path, factory=None, create=False)
        label = source or f"maildir:{path}"
    elif path.is_file():
        box = mailbox.mbox(path, factory=None, create=False)
        label = source or f"mbox:{path}"
    else:
        raise MailboxError(f"{path}: no such Maildir or mbox file")
    try:
        keys = sorted(key for key in box.iterkeys() if not str(key).startswith("."))
        for position, key in enumerate(keys, start=1):
            try:
                raw = box.get_bytes(key)
            except KeyError:
                continue  # removed by a mail client since the listing: nothing left to read
            yield str(key), classify_message(raw, source=label, line=position)
    finally:
        box.close()


class IMAPSource:
    """A folder on an IMAP server, read with EXAMINE and BODY.PEEK[] so nothing is marked."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        folder: str,
        *,
        use_ssl: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        since: date | None = None,
        timeout: float = 30.0,
        chunk_size: int = 50,
    ) -> None:
        if not folder.isascii():
            # Non-ASCII names need IMAP's modified UTF-7, which imaplib does not do.
            raise MailboxError(f"IMAP_FOLDER={folder!r}: only ASCII folder names are supported")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.folder = folder
        self.use_ssl = use_ssl
        self.ssl_context = ssl_context
        self.since = since
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.source = f"imap:{username}@{host}/{folder}"

    def fetch(self) -> Iterator[tuple[str, Result]]:
        """Every message in the folder (or since `since`), in UID order, as (key, result).

        The key is `uidvalidity:uid`, stable for as long as the server keeps the folder's
        UIDVALIDITY. Raises MailboxError naming the IMAP_* setting at fault.
        """
        client = self._connect()
        try:
            self._login(client)
            uidvalidity = self._examine(client)
            uids = self._search(client)
            for start in range(0, len(uids), self.chunk_size):
                for uid, raw in self._fetch_chunk(client, uids[start : start + self.chunk_size]):
                    result = classify_message(raw, source=self.source, line=uid)
                    yield f"{uidvalidity}:{uid}", result
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(
                f"IMAP_HOST={self.host}:{self.port}: reading {self.folder!r} failed: {_why(exc)}"
            ) from exc
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def _connect(self) -> imaplib.IMAP4:
        try:
            if self.use_ssl:
                # imaplib's own default context checks no certificate; this one does.
                context = self.ssl_context or ssl.create_default_context()
                return imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout
                )
            return imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except ssl.SSLError as exc:
            raise MailboxError(
                f"IMAP_HOST={self.host}:{self.port}: TLS failed: {_why(exc)}; check IMAP_SSL "
                "(implicit TLS, usually IMAP_PORT 993) and the server's certificate"
            ) from exc
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(
                f"IMAP_HOST={self.host}:{self.port}: cannot connect: {_why(exc)}; "
                "check IMAP_HOST, IMAP_PORT and IMAP_SSL"
            ) from exc

    def _login(self, client: imaplib.IMAP4) -> None:
        try:
            # imaplib sends the user name as typed; quoted, any character is safe.
            client.login(_quoted(self.username), self._password)
        except imaplib.IMAP4.error as exc:
            raise MailboxError(
                f"IMAP_USERNAME={self.username!r} could not log in to IMAP_HOST={self.host}: "
                f"{_why(exc)}; check IMAP_USERNAME and IMAP_PASSWORD"
            ) from exc

    def _examine(self, client: imaplib.IMAP4) -> str:
        """Open the folder read-only; return its UIDVALIDITY."""
        status, data = client.select(_quoted(self.folder), readonly=True)
        if status != "OK":
            raise MailboxError(
                f"IMAP_FOLDER={self.folder!r} cannot be opened on IMAP_HOST={self.host}: "
                f"{_text_of(data)}"
            )
        _, values = client.response("UIDVALIDITY")
        if not values or values[0] is None:
            raise MailboxError(f"IMAP_HOST={self.host}: {self.folder!r} has no UIDVALIDITY")
        return _text_of(values)

    def _search(self, client: imaplib.IMAP4) -> list[int]:
        criteria = ("SINCE", _imap_date(self.since)) if self.since else ("ALL",)
        status, data = client.uid("SEARCH", *criteria)
        if status != "OK":
            raise imaplib.IMAP4.error(f"UID SEARCH: {_text_of(data)}")
        return sorted({int(uid) for line in data if line for uid in line.split()})

    def _fetch_chunk(self, client: imaplib.IMAP4, uids: list[int]) -> list[tuple[int, bytes]]:
        """(uid, raw message) for the UIDs the server still has, in UID order."""
        status, data = client.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
        if status != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH: {_text_of(data)}")
        wanted = set(uids)
        found: dict[int, bytes] = {}
        for index, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            prefix, literal = item
            # UID may come before the literal or in the bytes that close the response.
            following = data[index + 1] if index + 1 < len(data) else b""
            tail = following if isinstance(following, bytes) else b""
            match = _IMAP_UID_RE.search(prefix) or _IMAP_UID_RE.search(tail)
            if match and int(match.group(1)) in wanted:
                found[int(match.group(1))] = literal
        return sorted(found.items())


def _imap_date(day: date) -> str:
    # RFC 3501 date: English month abbreviations whatever the process locale.
    return f"{day.day}-{_IMAP_MONTHS[day.month - 1]}-{day.year}"


def _quoted(text: str) -> str:
    """An IMAP quoted string (imaplib quotes passwords only)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text_of(data: Sequence[object]) -> str:
    first = data[0] if data else b""
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first or "")


def _why(exc: BaseException) -> str:
    """An imaplib error's server text (imaplib passes bytes through), else str()."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", "replace")
    return str(exc) or type(exc).__name__
