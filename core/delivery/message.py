"""The outgoing email as RFC 5322 bytes, built so untrusted text can never add a header.

Subject, names and body come from leads and the LLM. Header text is cleaned of every control
and line-break character and of the RFC 2047 encoded-word opener; addresses must be one plain
ASCII addr-spec each; the body lives in the MIME payload, where no line can become a header.

The delivery flow builds one message per send, so building must stay cheap (a few hundred
microseconds with serialisation). The email package's header classes parse every value when it
is set and again when it is folded, which cost milliseconds; here each header is instead made
of tokens that were validated and RFC 2047-encoded on the way in, and is stored as a
`_PreparedHeader`, which the email package keeps and folds without parsing it.
"""

import base64
import binascii
import functools
import html
import random
import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, Policy
from email.utils import format_datetime
from typing import Any

import email_validator
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

# Characters that make the email package quote a display name (headerregistry.Address).
_SPECIALS = frozenset('()<>@,:;."[]\\')
# RFC 2047 5(3): the only characters an encoded word in a phrase may carry unencoded.
_Q_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
# RFC 2047 2 limits a line holding an encoded word to 76 characters; an encoded word (at most
# 75) is sized to fit there even as the first token after `Subject: `.
_EW_LINE_LIMIT = 76
_EW_MAX_TEXT = _EW_LINE_LIMIT - len("Subject: ") - len("=?utf-8?q??=")
_EW_MAX_BASE64_BYTES = _EW_MAX_TEXT // 4 * 3
# A word this long fits on a continuation line of 78; longer ones are cut into encoded words.
_MAX_LITERAL_WORD = 77


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


class _PreparedHeader(str):
    """A header built here: str() is the decoded value, `tokens` its 7-bit wire form.

    It follows the email package's header-object protocol (`name`, `fold`), so the policy
    stores, returns and folds it as it is instead of parsing its text. The tokens were checked
    and encoded before the header was made: printable ASCII, no `=?` except in our own encoded
    words, quoted strings whole. Folding therefore only ever breaks lines between tokens; the
    stdlib folder instead re-encodes a token too long for a line as encoded words (receivers do
    not decode those in List-Unsubscribe, In-Reply-To or References) and, before gh-80222 was
    fixed, dropped the quotes of a quoted display name it had to fold.
    """

    name: str
    tokens: tuple[str, ...]
    line_limit: int

    def __new__(
        cls, name: str, decoded: str, tokens: tuple[str, ...], line_limit: int = 998
    ) -> "_PreparedHeader":
        """The header `name` showing `decoded`, sent as `tokens` separated by spaces.

        Lines are folded at the policy's max_line_length or `line_limit`, whichever is less.
        """
        header = super().__new__(cls, decoded)
        header.name = name
        header.tokens = tokens
        header.line_limit = line_limit
        return header

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and deepcopy by value; the default would call __new__ with the text only."""
        return (type(self), (self.name, str(self), self.tokens, self.line_limit))

    def __getattr__(self, attribute: str) -> Any:
        """What a stdlib header offers beyond text (`addresses`, `datetime`...), parsed lazily.

        Nothing on the send path needs these, so their cost is only paid by a caller who asks.
        """
        if attribute.startswith("_") or attribute in ("name", "tokens", "line_limit"):
            raise AttributeError(attribute)
        parsed = self.__dict__.get("_parsed")
        if parsed is None:
            parsed = self.__dict__["_parsed"] = _POLICY.header_factory(self.name, str(self))
        return getattr(parsed, attribute)

    @property
    def defects(self) -> tuple[Any, ...]:
        """Nothing was parsed, so nothing is defective."""
        return ()

    def fold(self, *, policy: Policy) -> str:
        """`Name: a b c` with policy line ends, a continuation line wherever a token overflows."""
        if not self.isascii() and getattr(policy, "utf8", False):
            # SMTPUTF8 (a non-ASCII recipient domain) and the console write non-ASCII text as
            # UTF-8 rather than encoded words; the email package's own header class does that.
            # Only subjects and names are non-ASCII, and names are cut for its folder.
            factory = getattr(policy, "header_factory", _POLICY.header_factory)
            folded: str = factory(self.name, str(self)).fold(policy=policy)
            return folded
        limit = min(policy.max_line_length or sys.maxsize, self.line_limit)
        one_line = f"{self.name}: {' '.join(self.tokens)}" if self.tokens else f"{self.name}:"
        if len(one_line) <= limit:  # most headers, and it spares the loop below
            return one_line + policy.linesep
        lines = []
        line = f"{self.name}:"
        for index, token in enumerate(self.tokens):
            if index and len(line) + 1 + len(token) > limit:
                lines.append(line)
                line = ""
            line += " " + token
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


# CRLF line ends for SMTP; 7-bit transfer encodings so no server needs 8BITMIME.
_POLICY = SMTP.clone(cte_type="7bit")


def _constant(name: str, value: str) -> _PreparedHeader:
    """A header of ASCII words that may fold between any two of them."""
    return _PreparedHeader(name, value, tuple(value.split(" ")))


_MIME_VERSION = _constant("MIME-Version", "1.0")
_LIST_UNSUBSCRIBE_POST = _constant("List-Unsubscribe-Post", _ONE_CLICK)
_CONTENT_TYPES = {
    subtype: _constant("Content-Type", f'text/{subtype}; charset="utf-8"')
    for subtype in ("plain", "html")
}
_TRANSFER_ENCODINGS = {
    cte: _constant("Content-Transfer-Encoding", cte)
    for cte in ("7bit", "quoted-printable", "base64")
}


def clean_header_text(value: str) -> str:
    """Header text with no control or line-break character, whitespace collapsed, stripped.

    `=?` becomes `= ?`: receivers and the email package decode `=?charset?q?...?=` anywhere in
    unstructured text and phrases, even inside quoted names, and a decoded CR LF would start a
    header of the sender's choosing. With the opener broken, lead text is only ever shown as
    typed; the message adds its own encoded words for non-ASCII text.
    """
    # Cc, Zl and Zp are all non-printable, so printable text (nearly all) skips the slow scan.
    if not value.isprintable():
        value = "".join(
            " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in value
        )
    return " ".join(value.split()).replace("=?", "= ?")


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
    headers.append(_mailbox("To", "to_name", to_address, email.to_name))
    if email.reply_to is not None:
        headers.append(_sender_mailbox("Reply-To", email.reply_to, None))
    headers.append(_unstructured("Subject", "subject", clean_header_text(email.subject)))
    headers.append(_constant("Date", format_datetime(email.date)))
    headers.append(_token_list("Message-ID", _message_id("message_id", email.message_id)))
    if email.in_reply_to is not None:
        parent = _message_id("in_reply_to", email.in_reply_to)
        headers.append(_token_list("In-Reply-To", parent))
        # RFC 5322 wants the parent's id last in References; a chain we were not given
        # degrades to the parent alone rather than to no References at all.
        chain = email.references or (email.in_reply_to,)
        headers.append(
            _token_list("References", *(_message_id("references", ref) for ref in chain))
        )
    # http is accepted for the local default PUBLIC_BASE_URL; RFC 8058 one-click (what Gmail and
    # Yahoo ask of bulk senders) needs https, so production must configure an https base URL.
    web_url = _url("unsubscribe_url", email.unsubscribe_url, ("https://", "http://"))
    mailto_url = _url("unsubscribe_mailto", email.unsubscribe_mailto, ("mailto:",))
    # The web URL first: some receivers only try the first entry.
    headers.append(_token_list("List-Unsubscribe", f"<{web_url}>,", f"<{mailto_url}>"))
    headers += (_LIST_UNSUBSCRIBE_POST, _MIME_VERSION)
    message = EmailMessage(policy=_POLICY)
    text = _clean_body(email.text_body)
    if not email.html:
        _set_headers(message, headers)
        _set_text(message, "text_body", text, "plain")
        return message
    # Only the top level carries MIME-Version, hence MIMEPart rather than EmailMessage parts.
    plain_part, html_part = MIMEPart(policy=_POLICY), MIMEPart(policy=_POLICY)
    payloads = [
        _set_text(plain_part, "text_body", text, "plain"),
        _set_text(html_part, "text_body", _text_to_html(text), "html"),
    ]
    headers.append(_multipart_alternative(payloads))
    _set_headers(message, headers)
    message.set_payload([plain_part, html_part])
    return message


def _set_headers(part: MIMEPart, headers: list[_PreparedHeader]) -> None:
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


def _multipart_alternative(payloads: list[str]) -> _PreparedHeader:
    """Content-Type for multipart/alternative, with a boundary no part's payload contains."""
    while True:
        # The email package's boundary style. It only has to be absent from the parts, which
        # only a 7bit payload (any ASCII text) could fail: QP escapes `=`, base64 has no `-`.
        boundary = f"==============={random.randrange(sys.maxsize):019d}=="
        if not any(boundary in payload for payload in payloads):
            break
    value = f'multipart/alternative; boundary="{boundary}"'
    return _PreparedHeader("Content-Type", value, tuple(value.split(" ")))


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
    # Without SMTPUTF8 the validator refuses any address that has no ASCII form.
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
def _sender_mailbox(header: str, address: str, name: str | None) -> _PreparedHeader:
    """_mailbox for the sending side, whose header is the same for every message it sends."""
    field = "sendingRules.fromEmail" if header == "From" else "sendingRules.replyTo"
    return _mailbox(header, "from_name", _sender_address(field, address), name)


def _mailbox(header: str, name_field: str, addr_spec: str, name: str | None) -> _PreparedHeader:
    """`Name <addr-spec>`, the name cleaned and quoted or encoded so it stays one phrase.

    A name of plain words goes as is; one with specials (commas, quotes, angle brackets) as one
    quoted string, which is never folded; a non-ASCII one as encoded words, whose text hides
    every special. Shown (str) as the email package's Address would show it.
    """
    display = _display_name(name or "")
    if not display:
        return _PreparedHeader(header, addr_spec, (addr_spec,))
    angle = f"<{addr_spec}>"
    has_specials = not _SPECIALS.isdisjoint(display)
    shown = _quoted(display) if has_specials else display
    if not display.isascii():
        words = _encoded_words(name_field, display)
        return _PreparedHeader(header, f"{shown} {angle}", (*words, angle), _EW_LINE_LIMIT)
    words = [shown] if has_specials else display.split(" ")
    return _PreparedHeader(header, f"{shown} {angle}", (*words, angle))


def _quoted(text: str) -> str:
    """`text` as an RFC 5322 quoted-string (it holds no control character)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _display_name(name: str) -> str:
    """The cleaned name, cut so that its quoted form always fits on one header line.

    Python without the 2025 fix of gh-80222 (3.11.7 among them) drops the quotes and escapes
    of a quoted display name it has to fold, so a long `"Evil <evil@x.com>, victim ..."`
    reaches the wire unquoted and adds a recipient. The email package still folds non-ASCII
    names when a message is written as UTF-8 (SMTPUTF8, see _PreparedHeader.fold); a quoted
    name of at most 77 characters fits on a line of its own, and no real name is longer.
    """
    cleaned = clean_header_text(name)
    if len(cleaned) + 2 + cleaned.count('"') + cleaned.count("\\") <= _MAX_QUOTED_NAME_LENGTH:
        return cleaned
    kept = []
    quoted_length = 2
    for char in cleaned:
        quoted_length += 2 if char in '"\\' else 1
        if quoted_length > _MAX_QUOTED_NAME_LENGTH:
            break
        kept.append(char)
    return "".join(kept).rstrip()


def _unstructured(header: str, field: str, text: str) -> _PreparedHeader:
    """Cleaned text as unstructured header tokens: ASCII words as is, the rest encoded.

    A run of words that are non-ASCII or too long for a line becomes encoded words, spaces
    included, since decoders drop the whitespace between two encoded words.
    """
    words = text.split(" ") if text else []
    if text.isascii() and all(len(word) <= _MAX_LITERAL_WORD for word in words):
        return _PreparedHeader(header, text, tuple(words))
    tokens: list[str] = []
    run: list[str] = []
    for word in words:
        if word.isascii() and len(word) <= _MAX_LITERAL_WORD:
            if run:
                tokens += _encoded_words(field, " ".join(run))
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(field, " ".join(run))
    return _PreparedHeader(header, text, tuple(tokens), _EW_LINE_LIMIT)


def _encoded_words(field: str, text: str) -> list[str]:
    """`text` as RFC 2047 UTF-8 encoded words, short enough for any line, in phrase-safe form.

    Q encoding keeps only letters, digits and `!*+-/` (RFC 2047 5(3)), so no word holds a
    quote, special, `?` or space of the text; base64 is used when it is clearly shorter. No
    word splits a character, so each decodes on its own.
    """
    try:
        data = text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON `\ud800` escape
        raise MessageError(f"{field}: not valid Unicode ({exc.reason})") from exc
    pieces = [_q_encoded(char) for char in text]
    if sum(map(len, pieces)) - (len(data) + 2) // 3 * 4 < 5:  # the email package's preference
        words = []
        current = ""
        for piece in pieces:
            if len(current) + len(piece) > _EW_MAX_TEXT:
                words.append(f"=?utf-8?q?{current}?=")
                current = ""
            current += piece
        words.append(f"=?utf-8?q?{current}?=")
        return words
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode()
        if len(chunk) + len(encoded) > _EW_MAX_BASE64_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=" for chunk in chunks]


@functools.lru_cache(maxsize=4096)
def _q_encoded(char: str) -> str:
    """One character in RFC 2047 Q encoding (phrase rules)."""
    if char in _Q_LITERAL:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode())


def _token_list(header: str, *tokens: str) -> _PreparedHeader:
    """A header of validated tokens (`<url>,`, `<msg-id>`), folded only between them."""
    return _PreparedHeader(header, " ".join(tokens), tokens)


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
