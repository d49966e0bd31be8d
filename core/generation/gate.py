"""Quality gate: every candidate email is checked here before anything is written.

Line endings: run `normalize_draft` first (it turns `\\r\\n` into `\\n` and trims). The gate
itself accepts `\\r\\n` in a body as one newline; a lone `\\r` is a control character.
Links: `scheme://…` URLs and bare `www.` hosts. A bare `example.com` with neither is plain text
to the gate. A link passes when its host is in `rules.link_allowlist` (or a subdomain of an
entry) or when the rendered template already links to that same host.
Problems never quote lead data or addresses, so they are safe to log and to show the model.
"""

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit

from core.campaigns.sending_rules import SendingRules
from core.generation.draft import EmailDraft
from core.generation.prompt import DELIMITER_TAGS, SYSTEM_RULES, normalize_allowlist

# Bounded repeats (a scheme, a local part, a DNS label): an unbounded one rescans the rest of a
# long run of word characters from every position, so a 100 KB lead value took minutes.
_LINK_RE = re.compile(r"\b(?:[a-z][a-z0-9+.-]{0,63}://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_LINK_TRAILING = ".,;:!?)]}*_"
_EMAIL_RE = re.compile(r"[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+", re.IGNORECASE)
# Bidirectional overrides can make a subject display differently from what it says.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_SEPARATORS = ("Zl", "Zp")
_LEAK_PHRASES = (
    "as an ai",
    "as a language model",
    "system prompt",
    "my instructions",
    "ignore your instructions",
    "ignore previous instructions",
    "ignore all previous instructions",
    "untrusted data",
    *(f"<{tag}" for tag in DELIMITER_TAGS),
    *(f"{tag}>" for tag in DELIMITER_TAGS),
    # Bare names only where they cannot be ordinary words ("thread" is one).
    *(tag for tag in DELIMITER_TAGS if "_" in tag),
)
_MIN_LEAK_SENTENCE_WORDS = 7
# Cut from lead text with a "-", which no phrase holds, so no cut can join two halves into one.
_LEAK_PHRASE_RE = re.compile("|".join(map(re.escape, _LEAK_PHRASES)), re.IGNORECASE)


def normalize_draft(draft: EmailDraft) -> EmailDraft:
    """`\\r\\n` becomes `\\n`; subject and body lose surrounding whitespace."""
    return EmailDraft(subject=draft.subject.strip(), body=draft.body.replace("\r\n", "\n").strip())


def check_draft(
    draft: EmailDraft,
    *,
    rendered: EmailDraft,
    rules: SendingRules,
    system_prompt: str | None = None,
) -> list[str]:
    """Human-readable problems with `draft`; an empty list means it may be sent.

    `rendered` is the step's template rendered with `trusted_variables`: links, addresses and
    phrases it already contains are allowed. `system_prompt` is the secret text whose
    distinctive sentences must not leak; None means the fixed `SYSTEM_RULES` (the campaign goal
    is the owner's own text and may be echoed).
    """
    problems: list[str] = []
    text = f"{draft.subject}\n{draft.body}"
    # Plain substring tests: UNRESOLVED_RE would rescan to the end from every "{{" (quadratic).
    if "{{" in text or "}}" in text:
        problems.append("contains an unresolved {{placeholder}} or stray template braces")
    if not draft.subject.strip():
        problems.append("subject is empty")
    if not draft.body.strip():
        problems.append("body is empty")
    if len(draft.subject) > rules.max_subject_length:
        problems.append(
            f"subject is {len(draft.subject)} characters; the limit is {rules.max_subject_length}"
        )
    if len(draft.body) > rules.max_body_length:
        problems.append(
            f"body is {len(draft.body)} characters; the limit is {rules.max_body_length}"
        )
    problems.extend(_subject_characters(draft.subject))
    problems.extend(_body_characters(draft.body))
    problems.extend(_links(text, f"{rendered.subject}\n{rendered.body}", rules.link_allowlist))
    problems.extend(_addresses(text, f"{rendered.subject}\n{rendered.body}"))
    problems.extend(_leaks(text, f"{rendered.subject}\n{rendered.body}", system_prompt))
    return problems


# Lead fields whose job is to hold a link or an address; every other value is only text.
LINK_BEARING_FIELDS = frozenset({"website", "email"})


def trusted_variables(variables: Mapping[str, str]) -> dict[str, str]:
    """Template variables as the gate trusts them: links, addresses and leak phrases cut from
    lead text.

    A template rendered with these is what the campaign owner vouched for. Rendered with the
    real values, lead data (scraped, imported, possibly hostile) could smuggle in a link, a
    recipient or instructions ("ignore previous instructions…") that the gate would then take
    for the template's own.
    """
    return {
        name: value
        if name in LINK_BEARING_FIELDS or name == "senderName"
        else _LEAK_PHRASE_RE.sub("-", _EMAIL_RE.sub("", _LINK_RE.sub("", value))).strip()
        for name, value in variables.items()
    }


def find_links(text: str) -> list[str]:
    """URLs (`scheme://…`) and bare `www.` hosts in text, trailing punctuation removed."""
    return [match.group().rstrip(_LINK_TRAILING) for match in _LINK_RE.finditer(text)]


def link_host(link: str) -> str | None:
    """The lower-case host a link points to; None when it has none or cannot be parsed."""
    try:
        host = urlsplit(link if "://" in link else f"http://{link}").hostname
    except ValueError:
        return None
    return host.strip(".") if host else None


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """True if host is an allowlisted domain or a subdomain of one (allowlist normalised)."""
    return any(host == domain or host.endswith(f".{domain}") for domain in allowlist)


def _subject_characters(subject: str) -> list[str]:
    bad = [
        ch
        for ch in subject
        if unicodedata.category(ch) == "Cc"
        or unicodedata.category(ch) in _LINE_SEPARATORS
        or ch in _BIDI_CONTROLS
    ]
    if not bad:
        return []
    return [f"subject must be one line without control characters (found {_codepoints(bad)})"]


def _body_characters(body: str) -> list[str]:
    bad = [
        ch
        for i, ch in enumerate(body)
        if (unicodedata.category(ch) == "Cc" and ch not in "\n\t\r")
        or (ch == "\r" and body[i + 1 : i + 2] != "\n")
        or unicodedata.category(ch) in _LINE_SEPARATORS
    ]
    if not bad:
        return []
    return [f"body contains control characters other than newline and tab ({_codepoints(bad)})"]


def _codepoints(chars: list[str]) -> str:
    return ", ".join(f"U+{ord(ch):04X}" for ch in dict.fromkeys(chars))


def _links(text: str, rendered: str, allowlist: list[str]) -> list[str]:
    allowed = normalize_allowlist(allowlist)
    template_hosts = {link_host(link) for link in find_links(rendered)} - {None}
    problems: list[str] = []
    for link in dict.fromkeys(find_links(text)):
        host = link_host(link)
        if host is None:
            problems.append("contains a malformed link")
        elif host not in template_hosts and not host_allowed(host, allowed):
            where = f"allowed: {', '.join(allowed)}" if allowed else "no links may be added"
            problems.append(f"links to {host}, which is not allowed ({where})")
    return list(dict.fromkeys(problems))


def _addresses(text: str, rendered: str) -> list[str]:
    known = {address.lower() for address in _EMAIL_RE.findall(rendered)}
    added = {address.lower() for address in _EMAIL_RE.findall(text)} - known
    if not added:
        return []
    return [f"adds {len(added)} email address(es) that the template does not contain"]


def _leaks(text: str, rendered: str, system_prompt: str | None) -> list[str]:
    output, source = _normalise(text), _normalise(rendered)
    problems = [
        f"contains {phrase!r}, which must never appear in an email"
        for phrase in _LEAK_PHRASES
        if phrase in output and phrase not in source
    ]
    if any(
        sentence in output and sentence not in source
        for sentence in _distinctive_sentences(system_prompt or SYSTEM_RULES)
    ):
        problems.append("repeats the instructions it was given")
    return problems


# Every draft is checked against the same system prompt: split it once (a tenth of a
# millisecond a check, twice a lead).
@lru_cache(maxsize=64)
def _distinctive_sentences(prompt: str) -> tuple[str, ...]:
    pieces = re.split(r"(?<=[.!?:;])\s+|\n+", prompt)
    sentences = [_normalise(piece.lstrip("-*•0123456789. ")) for piece in pieces]
    return tuple(s for s in sentences if len(s.split()) >= _MIN_LEAK_SENTENCE_WORDS)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:!?")
