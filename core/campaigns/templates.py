"""User-written templates: plain `{{placeholder}}` substitution, never an engine that runs code.

Syntax, the whole of it:
- `{{firstName}}` or `{{ firstName }}`: the lead's value; missing or blank is an error.
- `{{firstName|there}}`: the value, or the fallback text when missing or blank.
  The fallback is stripped and may be empty: `{{firstName|}}` renders nothing.
- `{{customFields.plan}}`: a key of the lead's custom fields (letters, digits, `_`, `-`).
- `{{senderName}}`: the sending mailbox's display name.

Anything else between `{{` and `}}` (`{{__class__}}`, `{{ 7*7 }}`, `{{a.b.c}}`, an unknown name),
nested or unbalanced braces and Jinja statements or comments (`{% … %}`, `{# … #}`) are
`TemplateError`s. `${…}`, `{x}` and other single-brace text are plain literal text.
Values are inserted literally and never re-scanned, so a value that looks like a placeholder
stays as typed (the quality gate then refuses to send it).
"""

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from core.campaigns.lead_fields import LEAD_FIELDS

SENDER_NAME = "senderName"
CUSTOM_PREFIX = "customFields."

# Leftover placeholder syntax in finished text (rendered or generated).
UNRESOLVED_RE = re.compile(r"\{\{.*?\}\}", re.DOTALL)

_TOKEN_RE = re.compile(r"\{\{|\}\}|\{%|\{#")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)?")
_CUSTOM_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_SUGGESTED_FALLBACKS = {"firstName": "there", "companyName": "your team", "title": "your role"}
_SNIPPET_CHARS = 40
_STRAY_MESSAGES = {
    "}}": "'}}' without an opening '{{'",
    "{%": "template logic ({% … %}) is not supported; use {{name|fallback}}",
    "{#": "template comments ({# … #}) are not supported",
}


class TemplateError(ValueError):
    """A template that cannot be rendered; `problems` lists every reason, one line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class _Placeholder:
    name: str
    fallback: str | None


_Part = str | _Placeholder


def lead_variables(
    lead_fields: Mapping[str, object],
    custom_fields: Mapping[str, object],
    sender_name: str | None,
) -> dict[str, str]:
    """The variables a template may use; missing, None and blank values are left out.

    Values become single-line text: control characters and line breaks turn into spaces, so
    lead data can never break a subject line (the gate checks again anyway).
    """
    variables: dict[str, str] = {}
    for name in LEAD_FIELDS:
        text = _to_text(lead_fields.get(name))
        if text:
            variables[name] = text
    for key, value in custom_fields.items():
        text = _to_text(value)
        if text and _CUSTOM_KEY_RE.fullmatch(str(key)):
            variables[f"{CUSTOM_PREFIX}{key}"] = text
    sender = _to_text(sender_name)
    if sender:
        variables[SENDER_NAME] = sender
    return variables


def find_placeholders(text: str) -> list[str]:
    """The variable names a template uses, in first-use order; raises TemplateError if malformed."""
    parts, problems = _parse(text)
    if problems:
        raise TemplateError(problems)
    names = [part.name for part in parts if isinstance(part, _Placeholder)]
    return list(dict.fromkeys(names))


def check_template(text: str, template_name: str = "template") -> list[str]:
    """Problems that fail this template for every lead (syntax, unknown names); [] means usable."""
    return [f"{template_name}: {problem}" for problem in _parsed(text)[1]]


def render(text: str, variables: Mapping[str, str], *, template_name: str = "template") -> str:
    """Substitute placeholders; raises TemplateError listing every problem at once."""
    rendered, problems = _render(text, variables, template_name)
    if problems:
        raise TemplateError(problems)
    return rendered


def render_subject_and_body(
    subject: str, body: str, variables: Mapping[str, str]
) -> tuple[str, str]:
    """Render a step's subject and body; one TemplateError reports the problems of both."""
    rendered_subject, subject_problems = _render(subject, variables, "subject")
    rendered_body, body_problems = _render(body, variables, "body")
    if subject_problems or body_problems:
        raise TemplateError([*subject_problems, *body_problems])
    return rendered_subject, rendered_body


def _render(text: str, variables: Mapping[str, str], template_name: str) -> tuple[str, list[str]]:
    parts, found = _parsed(text)
    problems = list(found)
    out: list[str] = []
    missing: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = variables.get(part.name, "")
        if value.strip():
            out.append(value)
        elif part.fallback is not None:
            out.append(part.fallback)
        elif part.name not in missing and _is_known(part.name):
            missing.append(part.name)
    for name in missing:
        example = _SUGGESTED_FALLBACKS.get(name, "fallback text")
        problems.append(
            f"{{{{{name}}}}} has no value and no fallback (write {{{{{name}|{example}}}}})"
        )
    return "".join(out), [f"{template_name}: {problem}" for problem in problems]


# A run renders each step's two templates four times a lead (with and without the lead's own
# values, for the gate); parsing each once instead saved about 0.1 ms of CPU per lead.
@lru_cache(maxsize=1024)
def _parsed(text: str) -> tuple[tuple[_Part, ...], tuple[str, ...]]:
    """A template's parts and every problem it has whatever the lead (syntax, unknown names)."""
    parts, problems = _parse(text)
    return tuple(parts), (*problems, *_unknown_names(parts))


def _parse(text: str) -> tuple[list[_Part], list[str]]:
    parts: list[_Part] = []
    problems: list[str] = []
    literal_start = 0
    pos = 0
    while (match := _TOKEN_RE.search(text, pos)) is not None:
        start, token = match.start(), match.group()
        if token != "{{":
            problems.append(_syntax_problem(text, start, _STRAY_MESSAGES[token]))
            pos = match.end()
            continue
        end = text.find("}}", start + 2)
        if end == -1:
            problems.append(_syntax_problem(text, start, "'{{' is never closed with '}}'"))
            break
        parts.append(text[literal_start:start])
        literal_start = pos = end + 2
        inner = text[start + 2 : end]
        if "{" in inner or "}" in inner:
            problems.append(_syntax_problem(text, start, "braces cannot be nested"))
            continue
        raw_name, sep, fallback = inner.partition("|")
        name = raw_name.strip()
        if not name:
            problems.append(_syntax_problem(text, start, "empty placeholder"))
        elif not _NAME_RE.fullmatch(name):
            problems.append(
                _syntax_problem(
                    text,
                    start,
                    "a name is letters, digits and '_' (customFields.<key> for custom fields)",
                )
            )
        else:
            parts.append(_Placeholder(name, fallback.strip() if sep else None))
    parts.append(text[literal_start:])
    return parts, problems


def _unknown_names(parts: list[_Part]) -> list[str]:
    unknown = [p.name for p in parts if isinstance(p, _Placeholder) and not _is_known(p.name)]
    known = ", ".join((*LEAD_FIELDS, SENDER_NAME, f"{CUSTOM_PREFIX}<key>"))
    return [
        f"{{{{{name}}}}} is not a known variable (known: {known})"
        for name in dict.fromkeys(unknown)
    ]


def _is_known(name: str) -> bool:
    if name.startswith(CUSTOM_PREFIX):
        return bool(_CUSTOM_KEY_RE.fullmatch(name.removeprefix(CUSTOM_PREFIX)))
    return name in LEAD_FIELDS or name == SENDER_NAME


def _syntax_problem(text: str, index: int, message: str) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    snippet = text[index : index + _SNIPPET_CHARS].split("\n", 1)[0]
    return f"line {line}, column {column}, near {snippet!r}: {message}"


def _to_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    else:
        text = str(value)
    return _single_line(text)


def _single_line(text: str) -> str:
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return " ".join(cleaned.split())
