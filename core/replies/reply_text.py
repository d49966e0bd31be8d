"""The new text of a reply: the sender's own words, without the quoted thread or the signature.

`mail-parser-reply` splits a plain-text body at the header a mail client writes above what it
quotes ("On … wrote:", "Le … a écrit :", "Am … schrieb …:", Outlook's "From:/Sent:" block, in
English, French, German and Spanish) and drops signatures and disclaimers. Two gaps of its 1.36
release are closed here: its Spanish "El … escribió:" pattern wants two spaces before
"escribió", which no client writes, so those headers (and the separators of forwarded
originals) are cut by `_QUOTE_HEADER`; and quoted lines (`>`) are dropped wherever they are.
An HTML-only reply is turned into text first, without its `<blockquote>` and Gmail quote.

Only this text is ever shown to the classifier, and it is never stored.
"""

import re
from email.errors import MessageError
from email.message import EmailMessage, Message
from html.parser import HTMLParser

from mailparser_reply import EmailReplyParser
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ADDRESS_RE",
    "NEW_TEXT_CHARS",
    "ReplyContent",
    "new_text",
    "reply_content",
    "without_addresses",
]

# The languages whose reply headers and signatures are recognised (and whose phrases the rules
# know); mail-parser-reply adds English to any list by itself.
LANGUAGES = ("en", "fr", "de", "es")
# A reply's own words come first and are short; a body is cut before parsing, so a forwarded
# archive costs the regular expressions a bounded amount of work.
_PARSE_CHARS = 10_000
# mail-parser-reply's header patterns cost the square of a line's length or worse (a 10,000
# character line of "On On On …" took 4 s), so the parser sees no line longer than this: a longer
# one is split at a space, each continuation marked with a word joiner (not whitespace, so no
# header or signature pattern can start there), and joined again after parsing.
_LINE_CHARS = 400
_CONTINUED = "\u2060"
_HTML_CHARS = 200_000
# What the classifier sees at most: a long reply's first 4,000 characters say what it wants.
NEW_TEXT_CHARS = 4_000
_SUBJECT_CHARS = 300

_QUOTE_HEADER = re.compile(
    r"^[ \t]*(?:"
    r"On\b.{0,300}?\bwrote:"
    r"|Le\b.{0,300}?\ba écrit\s?:"
    r"|Am\b.{0,300}?\bschrieb\b.{0,120}?:"
    r"|El\b.{0,300}?\bescribió\s?:"
    r"|-{2,}\s*(?:Original Message|Message d'origine|Ursprüngliche Nachricht|Mensaje original"
    r"|Forwarded message|Message transféré|Weitergeleitete Nachricht|Mensaje reenviado)\s*-{2,}"
    r")",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)
_BLANK_LINES = re.compile(r"\n{3,}")

# Anything around an @ up to a space, quote, bracket or separator: generous on purpose, since it
# guards what must not carry an address (a malformed record's reason, a reply's summary).
ADDRESS_RE = re.compile(r"[^\s'\"<>()\[\],;:]+@[^\s'\"<>()\[\],;:]+")


def without_addresses(text: str) -> str:
    """`text` with every address written `<address>`."""
    return ADDRESS_RE.sub("<address>", text) if "@" in text else text


class ReplyContent(BaseModel):
    """What the classifier may read of one inbound message. Carried, never stored."""

    model_config = ConfigDict(frozen=True)

    subject: str = Field(default="", max_length=_SUBJECT_CHARS)
    text: str = Field(default="", max_length=NEW_TEXT_CHARS, description="the new text only")
    automatic: bool = Field(
        default=False,
        description="its headers (Auto-Submitted, X-Autoreply, Precedence…) say no person sent it",
    )


def new_text(body: str) -> str:
    """The newest part of a plain-text body: no quoted thread, no signature, at most
    `NEW_TEXT_CHARS` characters."""
    text = _short_lines(body.replace("\r\n", "\n").replace(_CONTINUED, "")[:_PARSE_CHARS])
    replies = EmailReplyParser(languages=list(LANGUAGES)).read(text).replies
    # The parser skips an empty part, so a body that starts with a quote header (a bare forward)
    # has the quoted message first: its header says it is not new.
    newest = replies[0].body if replies and not replies[0].headers else ""
    newest = newest.replace("\n" + _CONTINUED, "").replace(_CONTINUED, "")
    newest = _QUOTE_HEADER.split(newest, maxsplit=1)[0]
    lines = [line for line in newest.split("\n") if not line.lstrip().startswith(">")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()[:NEW_TEXT_CHARS]


def _short_lines(text: str) -> str:
    """`text` with every line longer than `_LINE_CHARS` split, continuations marked."""
    lines = []
    for line in text.split("\n"):
        while len(line) > _LINE_CHARS:
            # Past the continuation mark and its space, or the line would never get shorter.
            cut = line.rfind(" ", 2, _LINE_CHARS)
            cut = cut if cut > 2 else _LINE_CHARS
            lines.append(line[:cut])
            line = _CONTINUED + line[cut:]
        lines.append(line)
    return "\n".join(lines)


def reply_content(message: EmailMessage, *, automatic: bool) -> ReplyContent:
    """The subject and new text of a reply or auto-reply, for its classification."""
    subject = " ".join(str(message.get("Subject", "")).split())[:_SUBJECT_CHARS]
    return ReplyContent(subject=subject, text=new_text(_body(message)), automatic=automatic)


def _body(message: EmailMessage) -> str:
    """The message's text: its first text/plain part, else its first text/html part as text;
    empty when its structure cannot be read (the event itself still counts)."""
    try:
        return _readable_body(message)
    except (MessageError, LookupError, ValueError, AttributeError, IndexError, TypeError):
        # The email package's known failures on hostile structure: the headers already made
        # the event, and a reply without text is classified as one without text.
        return ""


def _readable_body(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    if plain is not None and (text := _content(plain)):
        return text
    html = message.get_body(preferencelist=("html",))
    if html is not None and (markup := _content(html)):
        parser = _HTMLText()
        parser.feed(markup[:_HTML_CHARS])
        parser.close()
        return parser.text()
    return ""


def _content(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AttributeError):
        return ""  # an unknown charset or a broken transfer encoding: nothing to read
    return content if isinstance(content, str) else ""


class _HTMLText(HTMLParser):
    """Visible text of an HTML body, one line per block, without what it quotes."""

    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "hr"})
    _HIDDEN = frozenset({"blockquote", "style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping: str | None = None  # the element whose content is being left out
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skipping is not None:
            self._depth += tag == self._skipping
            return
        classes = (dict(attrs).get("class") or "").split()
        if tag in self._HIDDEN or (tag == "div" and "gmail_quote" in classes):
            self._skipping, self._depth = tag, 1
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._skipping is not None:
            if tag == self._skipping:
                self._depth -= 1
                if self._depth == 0:
                    self._skipping = None
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping is None:
            self._parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).split("\n"))
        return "\n".join(lines)
