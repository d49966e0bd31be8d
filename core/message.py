"""The outgoing email as RFC 5322 bytes, built so untrusted text can never add a header.

Subject, names and body come from leads and the LLM. Header text is cleaned of every control
and line-break character and of the RFC 2047 encoded-word opener; addresses must be one plain
ASCII addr-spec each; the body lives in the MIME payload, where no line can become a header.
"""

import html
import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, Policy
from email.utils import format_datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

# RFC 5322 caps a header line at 998 characters; a token alone on a line must fit with its fold.
_MAX_TOKEN_LENGTH = 900
# See _display_name: the longest quoted display name the stdlib folds without unquoting it.
_MAX_QUOTED_NAME_LENGTH = 77
# RFC 5322 msg-id with dot-atom-text on both sides; other mailers' ids (Gmail's hold `=` and
# `+`) must fit too, since a follow-up may answer a message we did not write.
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_MESSAGE_ID_RE = re.compile(f"<{_DOT_ATOM}@{_DOT_ATOM}>")
# Printable ASCII minus the characters that would end or split an RFC 2369 `<url>`.
_URL_RE = re.compile(r"[!#-;=?-~]+")
_REPLY_PREFIX_RE = re.compile(r"\A(?:re\s*:\s*)+", re.IGNORECASE)
_BLANK_LINES_RE = re.compile(r"\n(?:[ \t]*\n)+")
_BODY_LINE_BREAKS = ("\r\n", "\r", "\x85", "\u2028", "\u2029")
_ONE_CLICK = "List-Unsubscribe=One-Click"


class MessageError(ValueError):
    """A field that cannot be put in a message; str() names the field (e.g. 'Lead.email: ...')."""


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


class _TokenListHeader(BaseHeader):
    """A header of validated tokens (`<url>,`, `<msg-id>`) that folds only between tokens.

    The stdlib folder rewrites any token too long for a 78-column line as RFC 2047 encoded
    words. Receivers do not decode those in List-Unsubscribe, In-Reply-To or References, so a
    long unsubscribe URL or a long sending domain would silently break unsubscribing and
    threading. A token instead gets a line of its own, which RFC 5322 allows up to 998.
    """

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        """Keep the value verbatim; it was validated before it was set."""
        kwds["parse_tree"] = None
        kwds["decoded"] = value

    def fold(self, *, policy: Policy) -> str:
        """`Name: a b c`, starting a continuation line wherever the next token would overflow."""
        limit = policy.max_line_length or sys.maxsize
        lines = []
        line = f"{self.name}:"
        for index, token in enumerate(str(self).split(" ")):
            if index and len(line) + 1 + len(token) > limit:
                lines.append(line)
                line = ""
            line += " " + token
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


def _policy() -> Policy:
    headers = HeaderRegistry()
    for name in ("List-Unsubscribe", "In-Reply-To", "References"):
        headers.map_to_type(name, _TokenListHeader)
    # CRLF line ends for SMTP; 7-bit transfer encodings so no server needs 8BITMIME.
    return SMTP.clone(header_factory=headers, cte_type="7bit")


_POLICY = _policy()


def clean_header_text(value: str) -> str:
    """Header text with no control or line-break character, whitespace collapsed, stripped.

    `=?` becomes `= ?`: receivers and the email package decode `=?charset?q?...?=` anywhere in
    unstructured text and phrases, even inside quoted names, and a decoded CR LF would start a
    header of the sender's choosing. With the opener broken, lead text is only ever shown as
    typed; the email package still adds its own encoded words for non-ASCII text.
    """
    spaced = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in value
    )
    return " ".join(spaced.split()).replace("=?", "= ?")


def thread_subject(root_subject: str) -> str:
    """`Re: ` plus the cleaned root subject, replacing rather than adding to any `Re:` it has."""
    rest = _REPLY_PREFIX_RE.sub("", clean_header_text(root_subject))
    return f"Re: {rest}" if rest else "Re:"


def message_id_for(send_id: str, from_email: str) -> str:
    """`<send_id@sending domain>`: deterministic, so a retried send keeps its Message-ID."""
    left = re.sub(r"[^A-Za-z0-9._-]", "-", send_id)
    if not left:
        raise MessageError("EmailSend.id: empty, cannot make a Message-ID")
    domain = _address("sendingRules.fromEmail", from_email).rpartition("@")[2]
    return f"<{left}@{domain}>"


def build_message(email: OutgoingEmail) -> EmailMessage:
    """The complete message; raises MessageError naming the first field that cannot be sent."""
    if email.date.utcoffset() is None:
        raise MessageError("date: must be timezone-aware")
    message = EmailMessage(policy=_POLICY)
    message["From"] = _mailbox("sendingRules.fromEmail", email.from_email, email.from_name)
    message["To"] = _mailbox("Lead.email", email.to_email, email.to_name)
    if email.reply_to is not None:
        message["Reply-To"] = _mailbox("sendingRules.replyTo", email.reply_to, None)
    message["Subject"] = clean_header_text(email.subject)
    message["Date"] = format_datetime(email.date)
    message["Message-ID"] = _message_id("message_id", email.message_id)
    if email.in_reply_to is not None:
        message["In-Reply-To"] = _message_id("in_reply_to", email.in_reply_to)
        # RFC 5322 wants the parent's id last in References; a chain we were not given
        # degrades to the parent alone rather than to no References at all.
        chain = email.references or (email.in_reply_to,)
        message["References"] = " ".join(_message_id("references", ref) for ref in chain)
    # http is accepted for the local default PUBLIC_BASE_URL; RFC 8058 one-click (what Gmail and
    # Yahoo ask of bulk senders) needs https, so production must configure an https base URL.
    web_url = _url("unsubscribe_url", email.unsubscribe_url, ("https://", "http://"))
    mailto_url = _url("unsubscribe_mailto", email.unsubscribe_mailto, ("mailto:",))
    # The web URL first: some receivers only try the first entry.
    message["List-Unsubscribe"] = f"<{web_url}>, <{mailto_url}>"
    message["List-Unsubscribe-Post"] = _ONE_CLICK
    text = _clean_body(email.text_body)
    message.set_content(text)
    if email.html:
        # add_alternative would build an EmailMessage part, which repeats MIME-Version inside.
        message.make_alternative()
        html_part = MIMEPart(policy=_POLICY)
        html_part.set_content(_text_to_html(text), subtype="html")
        message.attach(html_part)
    return message


def _clean_body(text: str) -> str:
    """Line breaks as `\\n`; every other control character except tab removed."""
    for line_break in _BODY_LINE_BREAKS:
        text = text.replace(line_break, "\n")
    return "".join(char for char in text if char in "\n\t" or unicodedata.category(char) != "Cc")


def _text_to_html(text: str) -> str:
    """An HTML rendering of plain text: escaped, blank lines part paragraphs, newlines `<br>`."""
    paragraphs = [part for part in _BLANK_LINES_RE.split(text.strip("\n")) if part.strip()]
    body = "\n".join(
        "<p>" + html.escape(part).replace("\n", "<br>\n") + "</p>" for part in paragraphs
    )
    head = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
    return f"{head}{body}\n</body></html>\n"


def _address(field: str, value: str) -> str:
    """The one ASCII addr-spec in `value`, or MessageError naming `field`."""
    try:
        # No SMTPUTF8: a non-ASCII local part cannot be written in a 7-bit header.
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise MessageError(f"{field}: {exc}") from exc
    return result.ascii_email


def _mailbox(field: str, address: str, name: str | None) -> Address:
    """An Address whose display name is cleaned; the email package quotes commas and `<>`."""
    addr_spec = _address(field, address)
    return Address(display_name=_display_name(name or ""), addr_spec=addr_spec)


def _display_name(name: str) -> str:
    """The cleaned name, cut so that its quoted form always fits on one header line.

    Python without the 2025 fix of gh-80222 (3.11.7 among them) drops the quotes and escapes
    of a quoted display name it has to fold, so a long `"Evil <evil@x.com>, victim ..."`
    reaches the wire unquoted and adds a recipient. A quoted name of at most 77 characters
    always fits on a line of its own, so it is never folded; no real name is longer.
    """
    kept = []
    quoted_length = 2
    for char in clean_header_text(name):
        quoted_length += 2 if char in '"\\' else 1
        if quoted_length > _MAX_QUOTED_NAME_LENGTH:
            break
        kept.append(char)
    return "".join(kept).rstrip()


def _message_id(field: str, value: str) -> str:
    if len(value) > _MAX_TOKEN_LENGTH or not _MESSAGE_ID_RE.fullmatch(value):
        raise MessageError(f"{field}: not a <local@domain> Message-ID")
    return value


def _url(field: str, value: str, schemes: tuple[str, ...]) -> str:
    if not value.lower().startswith(schemes):
        raise MessageError(f"{field}: must start with {' or '.join(schemes)}")
    if len(value) > _MAX_TOKEN_LENGTH or not _URL_RE.fullmatch(value):
        raise MessageError(f"{field}: must be printable ASCII without spaces, quotes, < or >")
    return value
