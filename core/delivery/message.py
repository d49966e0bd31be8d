"""The outgoing email as RFC 5322 bytes, built so untrusted text can never add a header.

Subject, names and body come from leads and the LLM. Header text is cleaned of every control
and line-break character and of the RFC 2047 encoded-word opener; addresses must be one plain
ASCII addr-spec each; the body lives in the MIME payload, where no line can become a header.

The delivery flow builds one message per send, so building must stay cheap (a few hundred
microseconds with serialisation): every header is a `PreparedHeader` (core.delivery.headers),
which the email package keeps and folds without parsing it.
"""

import base64
import binascii
import functools
import html
import random
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

import email_validator
from email_validator import EmailNotValidError, validate_email

from core.delivery.headers import (
    HEADER_POLICY,
    MessageError,
    PreparedHeader,
    clean_header_text,
    constant_header,
    mailbox_header,
    token_list_header,
    unstructured_header,
)

# RFC 5322 caps a header line at 998 characters; a token alone on a line must fit with its fold.
_MAX_TOKEN_LENGTH = 900
# RFC 5322 msg-id with dot-atom-text on both sides; other mailers' ids (Gmail's hold `=` and
# `+`) must fit too, since a follow-up may answer a message we did not write.
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_MESSAGE_ID_RE = re.compile(f"<{_DOT_ATOM}@{_DOT_ATOM}>")
# Printable ASCII minus the characters that would end or split an RFC 2369 `<url>`.
_URL_RE = re.compile(r"[!#-;=?-~]+")
_REPLY_PREFIX_RE = re.compile(r"\A(?:re\s*:\s*)+", re.IGNORECASE)
_BLANK_LINES_RE = re.compile(r"\n(?:[ \t]*\n)+")
_ONE_CLICK = "List-Unsubscribe=One-Click"

# Every line break of str.splitlines() that _clean_body turns into `\n` (the rest are controls).
_BODY_LINE_BREAK_RE = re.compile(r"\r\n|[\r\x85\u2028\u2029]")
# General category Cc, which Unicode never changes (C0, DEL, C1), minus tab and line feed.
_BODY_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Either of the above; most bodies have none, and one scan is cheaper than two substitutions.
_BODY_UNSAFE_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# A body line too long for 7bit (RFC 5322 asks for at most 78 characters).
_LONG_LINE_RE = re.compile(r"[^\n]{79}")

# The plain `local@domain` most addresses are, in a form email_validator accepts unchanged
# (apart from lower-casing the domain): a dot-atom local part of RFC 5322 atext, then two or
# more LDH labels ending in a letter. Anything else (IDN, Punycode, quoting) goes to
# email_validator itself, which is more than ten times slower.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = r"(?:[A-Za-z0-9][A-Za-z0-9-]{0,61})?[A-Za-z]"
_PLAIN_ADDRESS_RE = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+{_TOP_LABEL})")


@dataclass(frozen=True)
class OutgoingEmail:
    """Everything one send needs; subject, names and body are untrusted text."""

    send_id: str
    from_email: str
    from_name: str | None
    reply_to: str | None
    to_email: str
    to_name: str | None
    subject: str
    text_body: str
    html: bool
    date: datetime
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    unsubscribe_url: str
    unsubscribe_mailto: str


_MIME_VERSION = constant_header("MIME-Version", "1.0")
_LIST_UNSUBSCRIBE_POST = constant_header("List-Unsubscribe-Post", _ONE_CLICK)
_CONTENT_TYPES = {
    subtype: constant_header("Content-Type", f'text/{subtype}; charset="utf-8"')
    for subtype in ("plain", "html")
}
_TRANSFER_ENCODINGS = {
    cte: constant_header("Content-Transfer-Encoding", cte)
    for cte in ("7bit", "quoted-printable", "base64")
}


def thread_subject(root_subject: str) -> str:
    """`Re: ` plus the cleaned root subject, replacing rather than adding to any `Re:` it has."""
    rest = _REPLY_PREFIX_RE.sub("", clean_header_text(root_subject))
    return f"Re: {rest}" if rest else "Re:"


def message_id_for(send_id: str, from_email: str) -> str:
    """`<send_id@sending domain>`: deterministic, so a retried send keeps its Message-ID."""
    left = re.sub(r"[^A-Za-z0-9._-]", "-", send_id)
    if not left:
        raise MessageError("EmailSend.id: empty, cannot make a Message-ID")
    domain = _sender_address("sendingRules.fromEmail", from_email).rpartition("@")[2]
    return f"<{left}@{domain}>"


def build_message(email: OutgoingEmail) -> EmailMessage:
    """The complete message; raises MessageError naming the first field that cannot be sent."""
    if email.date.utcoffset() is None:
        raise MessageError("date: must be timezone-aware")
    headers = [_sender_mailbox("From", email.from_email, email.from_name)]
    to_address = _address("Lead.email", email.to_email)
    headers.append(mailbox_header("To", "to_name", to_address, email.to_name))
    if email.reply_to is not None:
        headers.append(_sender_mailbox("Reply-To", email.reply_to, None))
    headers.append(unstructured_header("Subject", "subject", clean_header_text(email.subject)))
    headers.append(constant_header("Date", format_datetime(email.date)))
    headers.append(token_list_header("Message-ID", _message_id("message_id", email.message_id)))
    if email.in_reply_to is not None:
        parent = _message_id("in_reply_to", email.in_reply_to)
        headers.append(token_list_header("In-Reply-To", parent))
        # RFC 5322 wants the parent's id last in References; a chain we were not given
        # degrades to the parent alone rather than to no References at all.
        chain = email.references or (email.in_reply_to,)
        headers.append(
            token_list_header("References", *(_message_id("references", ref) for ref in chain))
        )
    # http is accepted for the local default PUBLIC_BASE_URL; RFC 8058 one-click (what Gmail and
    # Yahoo ask of bulk senders) needs https, so production must configure an https base URL.
    web_url = _url("unsubscribe_url", email.unsubscribe_url, ("https://", "http://"))
    mailto_url = _url("unsubscribe_mailto", email.unsubscribe_mailto, ("mailto:",))
    # The web URL first: some receivers only try the first entry.
    headers.append(token_list_header("List-Unsubscribe", f"<{web_url}>,", f"<{mailto_url}>"))
    headers += (_LIST_UNSUBSCRIBE_POST, _MIME_VERSION)
    message = EmailMessage(policy=HEADER_POLICY)
    text = _clean_body(email.text_body)
    if not email.html:
        _set_headers(message, headers)
        _set_text(message, "text_body", text, "plain")
        return message
    # Only the top level carries MIME-Version, hence MIMEPart rather than EmailMessage parts.
    plain, rich = MIMEPart(policy=HEADER_POLICY), MIMEPart(policy=HEADER_POLICY)
    payloads = [
        _set_text(plain, "text_body", text, "plain"),
        _set_text(rich, "text_body", _text_to_html(text), "html"),
    ]
    headers.append(_multipart_alternative(payloads))
    _set_headers(message, headers)
    message.set_payload([plain, rich])
    return message


def _set_headers(part: MIMEPart, headers: list[PreparedHeader]) -> None:
    """Append `headers` to a part that has none of them yet.

    set_raw is what the parser uses to store a header as it is. part[name] = header would
    store the same, but first looks up the header's class and scans every header already set
    (for max_count), which took a tenth of the time budget of a message.
    """
    for header in headers:
        part.set_raw(header.name, header)


def _set_text(part: MIMEPart, field: str, text: str, subtype: str) -> str:
    """Give `part` `text` as a UTF-8 text/`subtype` body; returns the encoded payload."""
    cte, payload = _encode_body(field, text)
    _set_headers(part, [_CONTENT_TYPES[subtype], _TRANSFER_ENCODINGS[cte]])
    part.set_payload(payload)
    return payload


def _encode_body(field: str, text: str) -> tuple[str, str]:
    """The Content-Transfer-Encoding and payload (`\\n` line ends) for UTF-8 `text`.

    As the email package would choose: 7bit for ASCII with no line over 78 characters, else
    the shorter of quoted-printable (Latin text) and base64 (other scripts).
    """
    body = text if text.endswith("\n") else text + "\n"
    if body.isascii() and not _LONG_LINE_RE.search(body):
        return "7bit", body
    try:
        data = body.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON `\ud800` escape
        raise MessageError(f"{field}: not valid Unicode ({exc.reason})") from exc
    quoted = binascii.b2a_qp(data)
    # base64.encodebytes writes 76-character lines of 57 bytes each.
    if len(quoted) <= (len(data) + 56) // 57 * 77:
        return "quoted-printable", quoted.decode("ascii")
    return "base64", base64.encodebytes(data).decode("ascii")


def _multipart_alternative(payloads: list[str]) -> PreparedHeader:
    """Content-Type for multipart/alternative, with a boundary no part's payload contains."""
    while True:
        # The email package's boundary style. It only has to be absent from the parts, which
        # only a 7bit payload (any ASCII text) could fail: QP escapes `=`, base64 has no `-`.
        boundary = f"==============={random.randrange(sys.maxsize):019d}=="
        if not any(boundary in payload for payload in payloads):
            break
    value = f'multipart/alternative; boundary="{boundary}"'
    return PreparedHeader("Content-Type", value, tuple(value.split(" ")))


def _clean_body(text: str) -> str:
    """Line breaks as `\\n`; every other control character except tab removed."""
    if not _BODY_UNSAFE_RE.search(text):
        return text
    return _BODY_CONTROL_RE.sub("", _BODY_LINE_BREAK_RE.sub("\n", text))


def _text_to_html(text: str) -> str:
    """An HTML rendering of plain text: escaped, blank lines part paragraphs, newlines `<br>`."""
    paragraphs = [part for part in _BLANK_LINES_RE.split(text.strip("\n")) if part.strip()]
    body = "\n".join(
        "<p>" + html.escape(part).replace("\n", "<br>\n") + "</p>" for part in paragraphs
    )
    head = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
    return f"{head}{body}\n</body></html>\n"


def _address(field: str, value: str) -> str:
    """The one ASCII addr-spec in `value` as email_validator normalises it, or MessageError."""
    if "=?" in value:
        # Valid atext, but the email package (and other lenient readers) decode an encoded
        # word at the start of a local part, so the address would read back as another one.
        raise MessageError(f"{field}: `=?` is not allowed in an address")
    plain = _plain_address(value)
    if plain is not None:
        return plain
    try:
        # No SMTPUTF8: a non-ASCII local part cannot be written in a 7-bit header.
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise MessageError(f"{field}: {exc}") from exc
    # Without SMTPUTF8 the validator only accepts addresses that have an ASCII form.
    assert result.ascii_email is not None
    return result.ascii_email


def _plain_address(value: str) -> str | None:
    """validate_email's ascii_email for a plain lower-case `local@domain`, else None.

    Upper-case local parts are left to email_validator, which lower-cases a few of them
    (RFC 2142 role names such as `Info`); Punycode (`--`) and reserved domains likewise.
    """
    match = _PLAIN_ADDRESS_RE.fullmatch(value)
    if match is None:
        return None
    local, domain = match[1], match[2].lower()
    if (
        len(value) > 254
        or len(local) > 64
        or len(domain) > 253
        or "--" in domain
        or local != local.lower()
    ):
        return None
    # Read per call: email_validator documents this list as a setting callers may change.
    for reserved in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == reserved or domain.endswith("." + reserved):
            return None
    return f"{local}@{domain}"


# Sender and Reply-To addresses repeat for every message of a campaign.
_sender_address = functools.lru_cache(maxsize=256)(_address)


@functools.lru_cache(maxsize=256)
def _sender_mailbox(header: str, address: str, name: str | None) -> PreparedHeader:
    """mailbox_header for the sending side, whose header is the same for every message it sends."""
    field = "sendingRules.fromEmail" if header == "From" else "sendingRules.replyTo"
    return mailbox_header(header, "from_name", _sender_address(field, address), name)


def _message_id(field: str, value: str) -> str:
    """`value` if it is one `<local@domain>` Message-ID that fits a header line."""
    if len(value) > _MAX_TOKEN_LENGTH or not _MESSAGE_ID_RE.fullmatch(value):
        raise MessageError(f"{field}: not a <local@domain> Message-ID")
    return value


def _url(field: str, value: str, schemes: tuple[str, ...]) -> str:
    """`value` if it starts with one of `schemes` and can sit in `<...>` on a header line."""
    if not value.lower().startswith(schemes):
        raise MessageError(f"{field}: must start with {' or '.join(schemes)}")
    if len(value) > _MAX_TOKEN_LENGTH or not _URL_RE.fullmatch(value):
        raise MessageError(f"{field}: must be printable ASCII without spaces, quotes, < or >")
    return value
