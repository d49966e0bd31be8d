"""Bounces that are not RFC 3464 to the letter: flufl.bounce first, then a prose reader.

`core.engagement.inbound` reads a well-formed delivery report itself. What it cannot read (a
report whose status part is mislabelled or lacks its Action field, prose from MAILER-DAEMON or
postmaster, an Exchange NDR flattened to text) comes here. flufl.bounce knows many mail
servers' formats and names the failed address; it says little about hard or soft, so the
notification's own words decide that when they say anything (an enhanced status code, an SMTP
reply, a warning, a phrase). The prose reader covers what flufl.bounce does not know, such as
localised Exchange NDRs. tests/fixtures/bounces is the corpus both are measured on.
"""

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import getaddresses
from enum import StrEnum

from flufl.bounce import all_failures

from core.engagement.events import BounceKind

__all__ = [
    "BounceReader",
    "BounceReading",
    "is_failure_subject",
    "one_line_diagnostic",
    "part_text",
    "read_prose",
    "read_with_flufl",
    "writes_bounces",
]


class BounceReader(StrEnum):
    """Which reader recognised a bounce; kept in the event's metadata as `bounceReader`."""

    rfc3464 = "rfc3464"
    flufl = "flufl.bounce"
    prose = "prose"


@dataclass(frozen=True)
class BounceReading:
    """What a reader made of a bounce: the failed address (None when it could not tell one)."""

    recipient: str | None
    kind: BounceKind
    reader: BounceReader
    diagnostic: str | None


# A diagnostic comes from a remote server; a bound keeps EngagementEvent.metadata small.
_MAX_DIAGNOSTIC = 500
_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster"})
# The system mailbox Exchange and Office 365 send their NDRs from (the same name in every
# organisation); before it was known here, an NDR in prose from it counted as the lead's reply.
_EXCHANGE_SYSTEM_MAILBOX_RE = re.compile(r"microsoftexchange[0-9a-f]{32}")
# Where the returned message begins in a notification: its first header line, or the line a
# mail server puts before it. What follows is our own email, whose words must not decide.
_RETURNED_MESSAGE_RE = re.compile(
    r"^(?:(?:return-path|received|message-id|from|to|subject|date|mime-version):\s"
    r"|[\s>-]*(?:below this line is a copy|this is a copy of the message|original message|"
    r"enclosed are the original headers|message header follows|returned mail follows|"
    r"urspr(?:ü|ue)ngliche nachricht|kopfzeilen der urspr|en-t(?:ê|e)tes de message d'origine))",
    re.IGNORECASE | re.MULTILINE,
)
# A delay warning is soft whatever code it quotes: the server is still trying.
_WARNING_RE = re.compile(
    r"warning message only|has been delayed|not yet been delivered|delivery attempts will "
    r"continue|will keep trying|will be retried|transient non-fatal|"
    r"zustellung verz(?:ö|oe)gert|remise diff(?:é|e)r(?:é|e)e",
    re.IGNORECASE,
)
# RFC 3463 enhanced status codes: 5.x.x permanent, 4.x.x transient (`#5.1.1`, `(#4.4.1)`), not
# a piece of an IP address or a version number.
_ENHANCED_CODE_RE = re.compile(r"(?<![\w.])([45])\.\d{1,3}\.\d{1,3}(?!\.?\d)")
# A basic SMTP reply at the start of a line or after a colon or quote (`said: 550 ...`).
_REPLY_CODE_RE = re.compile(r"(?:^[\s#<>]*|[:'\"]\s*)([45])[0-5]\d(?=[ -])", re.MULTILINE)
_SOFT_PHRASES_RE = re.compile(
    r"mailbox (?:is )?full|over (?:disk )?quota|quota exceeded|insufficient (?:system )?storage|"
    r"temporar|try again later|postfach (?:des empf(?:ä|ae)ngers )?ist voll|vor(?:ü|ue)bergehend|"
    r"bo(?:î|i)te aux lettres [\w ]*pleine|temporaire",
    re.IGNORECASE,
)
_HARD_PHRASES_RE = re.compile(
    r"user unknown|unknown user|no such user|does not exist|doesn't exist|not found|"
    r"couldn't be found|address rejected|not listed in|no mailbox|failed permanently|"
    r"permanent (?:error|failure)|existiert nicht|nicht gefunden|unbekannt|introuvable|"
    r"n'existe pas|inconnu",
    re.IGNORECASE,
)
# How mail servers begin the subject of a failure notice, in English, German and French. A
# reply or forward (`Re:`, `Fwd:`) does not begin so.
_FAILURE_SUBJECT_RE = re.compile(
    r"\s*(?:undeliver|returned mail|failure|failed|permanent delivery failure|mail delivery "
    r"failed|delivery (?:status notification \(failure\)|failure|has failed|failed)|mail could "
    r"not be delivered|message status - undeliverable|non-delivery|unzustellbar|nicht "
    r"zustellbar|non remis|(?:é|e)chec de (?:la )?remise|non d(?:é|e)livr(?:é|e))",
    re.IGNORECASE,
)
_TO_LINE_RE = re.compile(r"^to:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
_ADDRESS_RE = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
# A report's recipient fields read as text, the address as we sent it first.
_RECIPIENT_FIELD_RES = tuple(
    re.compile(rf"^{name}:\s*[\w-]+\s*;\s*<?([^\s<>]+@[^\s<>]+)>?", re.IGNORECASE | re.MULTILINE)
    for name in ("original-recipient", "final-recipient")
)
_DIAGNOSTIC_FIELD_RE = re.compile(r"^\s*diagnostic-code:\s*", re.IGNORECASE)
# Lines of a notification worth keeping as its diagnostic: the server's reply with its
# enhanced code (`550 5.1.1 ...`), else any line with an enhanced code (`Status: 5.1.1`).
_DIAGNOSTIC_LINES = (
    re.compile(r"\b[45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}\b"),
    re.compile(r"\b[45]\.\d\.\d{1,3}\b"),
)


@dataclass(frozen=True)
class _Notice:
    """A bounce's own words (its text before the returned message, and any report fields)."""

    text: str
    subject: str
    failed_header: str | None  # X-Failed-Recipients, which Exim and Gmail write
    original_to: str | None  # whom the returned message was addressed to
    ours: frozenset[str]  # addresses that are not the failed recipient: ours and the daemon's


def read_with_flufl(message: EmailMessage) -> BounceReading | None:
    """flufl.bounce's reading: the address it finds, hard unless the notice says otherwise."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:
        # A detector's bug on one odd message must not stop a mailbox's ingestion; the prose
        # reader still gets its turn. flufl.bounce logs the traceback itself.
        return None
    notice = _notice(message)
    found = [address.decode("ascii", "replace").lower() for address in temporary | permanent]
    candidates = [address for address in found if _could_have_failed(address, notice)]
    if not candidates:
        return None
    # Only warnings (its temporary set) mean the server is still trying: soft whatever they say.
    kind = (_kind_in(notice) or BounceKind.hard) if permanent else BounceKind.soft
    recipient = _pick(candidates, notice)
    return BounceReading(recipient, kind, BounceReader.flufl, _diagnostic_line(notice.text))


def read_prose(message: EmailMessage) -> BounceReading | None:
    """A failure notice read as text: the address it names and the words around it.

    The failed address is X-Failed-Recipients, else a report's Original- or Final-Recipient
    whatever its part is labelled, else the one address the notice names that is not ours.
    Hard or soft comes from the notice; a notice that says neither is hard when its subject is
    a failure's, and is not recognised otherwise.
    """
    notice = _notice(message)
    kind = _kind_in(notice)
    if kind is None and is_failure_subject(notice.subject):
        kind = BounceKind.hard
    if kind is None:
        return None
    fields = (pattern.findall(notice.text) for pattern in _RECIPIENT_FIELD_RES)
    if notice.failed_header:
        candidates = [notice.failed_header]
    elif found := next((addresses for addresses in fields if addresses), None):
        candidates = [address.lower() for address in found]
    else:
        named = (match.lower().strip(".'") for match in _ADDRESS_RE.findall(notice.text))
        candidates = [address for address in named if _could_have_failed(address, notice)]
    recipient = _pick(candidates, notice)
    return BounceReading(recipient, kind, BounceReader.prose, _diagnostic_line(notice.text))


def is_failure_subject(subject: str) -> bool:
    """Whether a subject begins the way mail servers begin a failure notice's."""
    return bool(_FAILURE_SUBJECT_RE.match(unicodedata.normalize("NFKC", subject)))


def writes_bounces(address: str) -> bool:
    """MAILER-DAEMON, postmaster or Exchange's system mailbox: never a lead writing back."""
    local = address.partition("@")[0].lower()
    return local in _DAEMON_LOCAL_PARTS or bool(_EXCHANGE_SYSTEM_MAILBOX_RE.fullmatch(local))


def _notice(message: EmailMessage) -> _Notice:
    texts: list[str] = []
    original_to = None
    for part in _parts_outside_returned_message(message):
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            blocks = part.get_payload()
            if isinstance(blocks, list):
                texts += [block.as_string() for block in blocks if isinstance(block, Message)]
        elif content_type == "message/rfc822":
            embedded = part.get_payload()
            if isinstance(embedded, list) and embedded and isinstance(embedded[0], Message):
                original_to = original_to or _first_address(embedded[0].get_all("To", []))
        elif content_type == "text/rfc822-headers":
            original_to = original_to or _to_address_in(part_text(part))
        elif content_type == "text/plain":
            own_words, returned = _split_at_returned_message(part_text(part))
            original_to = original_to or _to_address_in(returned)
            texts.append(own_words)
    failed = _first_address(message.get_all("X-Failed-Recipients", []))
    ours = {
        address.lower()
        for name in ("From", "To", "Sender", "Reply-To")
        for _, address in getaddresses([str(value) for value in message.get_all(name, [])])
    }
    return _Notice(
        text="\n".join(texts),
        subject=str(message.get("Subject", "")),
        failed_header=failed,
        original_to=original_to,
        ours=frozenset(ours),
    )


def _parts_outside_returned_message(message: EmailMessage) -> list[Message]:
    """Every leaf part of the bounce and each returned message part, but not what it holds."""
    found: list[Message] = []
    pending: list[Message] = [message]
    while pending:
        part = pending.pop(0)
        if part.get_content_type() in ("message/rfc822", "message/delivery-status"):
            found.append(part)
        elif part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                pending = [sub for sub in payload if isinstance(sub, Message)] + pending
        else:
            found.append(part)
    return found


def _split_at_returned_message(text: str) -> tuple[str, str]:
    """(the notice's own words, the returned message quoted below them, or empty)."""
    found = _RETURNED_MESSAGE_RE.search(text)
    return (text[: found.start()], text[found.start() :]) if found else (text, "")


def _to_address_in(headers: str) -> str | None:
    """The first address of the To line of header lines quoted as text."""
    found = _TO_LINE_RE.search(headers)
    return _first_address([found.group(1)]) if found else None


def _first_address(values: Iterable[object]) -> str | None:
    for _, address in getaddresses([str(value) for value in values]):
        if "@" in address:
            return address.lower()
    return None


def _could_have_failed(address: str, notice: _Notice) -> bool:
    return "@" in address and address not in notice.ours and not writes_bounces(address)


def _pick(candidates: list[str], notice: _Notice) -> str | None:
    """The returned message's recipient when named; else the only address; else None.

    Our emails go to one recipient each, so two different addresses and no returned message
    to tell them apart is a guess, and a wrong guess would stop the wrong lead.
    """
    distinct = list(dict.fromkeys(candidates))
    if notice.original_to in distinct:
        return notice.original_to
    return distinct[0] if len(distinct) == 1 else None


def _kind_in(notice: _Notice) -> BounceKind | None:
    """Hard or soft as the notice says it: a warning, then status codes, then phrases."""
    words = f"{notice.subject}\n{notice.text}"
    if _WARNING_RE.search(words):
        return BounceKind.soft
    for pattern in (_ENHANCED_CODE_RE, _REPLY_CODE_RE):
        if found := pattern.search(notice.text):
            return BounceKind.hard if found.group(1) == "5" else BounceKind.soft
    if _SOFT_PHRASES_RE.search(words):
        return BounceKind.soft
    if _HARD_PHRASES_RE.search(words):
        return BounceKind.hard
    return None


def one_line_diagnostic(value: str) -> str | None:
    """A Diagnostic-Code without its type (`smtp;`), on one line, bounded."""
    text = " ".join(value.split())
    if ";" in text and " " not in text.partition(";")[0]:
        text = text.partition(";")[2].strip()
    return text[:_MAX_DIAGNOSTIC] or None


def _diagnostic_line(text: str) -> str | None:
    """The notice's first line quoting an SMTP reply, else its first status code."""
    rows = text.splitlines()
    for pattern in _DIAGNOSTIC_LINES:
        if line := next((row for row in rows if pattern.search(row)), None):
            return one_line_diagnostic(_DIAGNOSTIC_FIELD_RE.sub("", line))
    return None


def part_text(part: Message) -> str:
    """A text part's decoded content, or empty when its charset or encoding is unusable."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError):
        return ""
    return content if isinstance(content, str) else ""
