"""Header values made of tokens validated and RFC 2047-encoded on the way in.

The email package's header classes parse every value when it is set and again when it is folded,
which cost milliseconds per message; a `PreparedHeader` is kept and folded as it is, without
parsing. Untrusted text (names, subjects) is cleaned of every control and line-break character
and of the encoded-word opener before it becomes tokens, so it can never add a header.
"""

import base64
import functools
import sys
import unicodedata
from email.policy import SMTP, Policy
from typing import Any

# See _display_name: the longest quoted display name the stdlib folds without unquoting it.
_MAX_QUOTED_NAME_LENGTH = 77
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


class PreparedHeader(str):
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
    ) -> "PreparedHeader":
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
            parsed = self.__dict__["_parsed"] = HEADER_POLICY.header_factory(self.name, str(self))
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
            factory = getattr(policy, "header_factory", HEADER_POLICY.header_factory)
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
HEADER_POLICY = SMTP.clone(cte_type="7bit")


def constant_header(name: str, value: str) -> PreparedHeader:
    """A header of ASCII words that may fold between any two of them."""
    return PreparedHeader(name, value, tuple(value.split(" ")))


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


def mailbox_header(
    header: str, name_field: str, addr_spec: str, name: str | None
) -> PreparedHeader:
    """`Name <addr-spec>`, the name cleaned and quoted or encoded so it stays one phrase.

    A name of plain words goes as is; one with specials (commas, quotes, angle brackets) as one
    quoted string, which is never folded; a non-ASCII one as encoded words, whose text hides
    every special. Shown (str) as the email package's Address would show it.
    """
    display = _display_name(name or "")
    if not display:
        return PreparedHeader(header, addr_spec, (addr_spec,))
    angle = f"<{addr_spec}>"
    has_specials = not _SPECIALS.isdisjoint(display)
    shown = _quoted(display) if has_specials else display
    if not display.isascii():
        words = _encoded_words(name_field, display)
        return PreparedHeader(header, f"{shown} {angle}", (*words, angle), _EW_LINE_LIMIT)
    words = [shown] if has_specials else display.split(" ")
    return PreparedHeader(header, f"{shown} {angle}", (*words, angle))


def _quoted(text: str) -> str:
    """`text` as an RFC 5322 quoted-string (it holds no control character)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _display_name(name: str) -> str:
    """The cleaned name, cut so that its quoted form always fits on one header line.

    Python without the 2025 fix of gh-80222 (3.11.7 among them) drops the quotes and escapes
    of a quoted display name it has to fold, so a long `"Evil <evil@x.com>, victim ..."`
    reaches the wire unquoted and adds a recipient. The email package still folds non-ASCII
    names when a message is written as UTF-8 (SMTPUTF8, see PreparedHeader.fold); a quoted
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


def unstructured_header(header: str, field: str, text: str) -> PreparedHeader:
    """Cleaned text as unstructured header tokens: ASCII words as is, the rest encoded.

    A run of words that are non-ASCII or too long for a line becomes encoded words, spaces
    included, since decoders drop the whitespace between two encoded words.
    """
    words = text.split(" ") if text else []
    if text.isascii() and all(len(word) <= _MAX_LITERAL_WORD for word in words):
        return PreparedHeader(header, text, tuple(words))
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
    return PreparedHeader(header, text, tuple(tokens), _EW_LINE_LIMIT)


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


def token_list_header(header: str, *tokens: str) -> PreparedHeader:
    """A header of validated tokens (`<url>,`, `<msg-id>`), folded only between them."""
    return PreparedHeader(header, " ".join(tokens), tokens)
