"""The mailbox file (`mailbox add --file mailboxes.yaml`): a workspace's sending mailboxes."""

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
)

from core.mailboxes.warmup import (
    DEFAULT_DAILY_LIMIT,
    DEFAULT_WARMUP_INCREMENT,
    DEFAULT_WARMUP_START,
)
from core.settings import SMTPSecurity

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]


class SecretScheme(StrEnum):
    env = "env"  # an environment variable of the process that sends or reads
    prefect_secret = "prefect-secret"  # a Prefect Secret block


# Environment variable names as POSIX shells accept them; Prefect's rule for block names.
_NAME_RULES = {
    SecretScheme.env: (re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "letters, digits and _"),
    SecretScheme.prefect_secret: (re.compile(r"[a-z0-9-]+"), "lowercase letters, digits and -"),
}
_REFERENCE_HELP = "a password is a reference, env:NAME or prefect-secret:NAME, never the password"


class PasswordRef(BaseModel):
    """Where a password lives (`env:NAME` or `prefect-secret:NAME`); never the password itself."""

    model_config = ConfigDict(frozen=True)

    scheme: SecretScheme
    name: str

    @classmethod
    def parse(cls, text: str) -> Self:
        """Read `scheme:NAME`; the error never repeats the text, which may be a password."""
        scheme, sep, name = text.partition(":")
        if not sep or scheme not in SecretScheme.__members__.values():
            raise ValueError(_REFERENCE_HELP)
        rule, allowed = _NAME_RULES[SecretScheme(scheme)]
        if not rule.fullmatch(name):
            raise ValueError(f"the name after {scheme}: may only hold {allowed}")
        return cls(scheme=SecretScheme(scheme), name=name)

    def __str__(self) -> str:
        return f"{self.scheme.value}:{self.name}"


def _reference(value: object) -> object:
    if isinstance(value, PasswordRef):
        return value
    if not isinstance(value, str):
        raise ValueError(_REFERENCE_HELP)
    return PasswordRef.parse(value)


Password = Annotated[PasswordRef, BeforeValidator(_reference), PlainSerializer(str)]


class _File(BaseModel):
    # The web app's camelCase names; unknown keys are refused, not ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSpec(_File):
    host: NonBlank
    port: Port = 587
    security: SMTPSecurity = SMTPSecurity.starttls
    username: NonBlank
    password: Password


class ImapSpec(_File):
    host: NonBlank
    port: Port = 993
    ssl: bool = True
    username: NonBlank
    password: Password
    folder: NonBlank = "INBOX"


class WarmupSpec(_File):
    start: int = Field(default=DEFAULT_WARMUP_START, ge=1)
    increment: int = Field(default=DEFAULT_WARMUP_INCREMENT, ge=0)
    # Unset: the day the mailbox is added (and kept when the file is added again).
    startedAt: date | None = None


class MailboxSpec(_File):
    """One sending mailbox as written in the file."""

    email: EmailStr
    name: str | None = None
    smtp: SmtpSpec
    imap: ImapSpec | None = None
    dailyLimit: int = Field(default=DEFAULT_DAILY_LIMIT, ge=1)
    warmup: WarmupSpec = Field(default_factory=WarmupSpec)


class MailboxFile(_File):
    """A workspace's mailboxes, as written in YAML or JSON."""

    workspaceId: NonBlank
    mailboxes: list[MailboxSpec] = Field(min_length=1)


class MailboxFileError(ValueError):
    """A mailbox file that cannot be used; `problems` lists every error found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


def parse_mailbox_file(document: object, source: str = "mailbox file") -> MailboxFile:
    """Validate a loaded YAML/JSON document, listing every problem at once."""
    entries = _entries(document)
    problems: list[str] = []
    parsed: MailboxFile | None = None
    try:
        parsed = MailboxFile.model_validate(document)
    except ValidationError as exc:
        problems = [_describe(error["loc"], error["msg"], entries) for error in exc.errors()]
    problems += _repeated_emails(entries)
    if parsed is None or problems:
        raise MailboxFileError(source, problems)
    return parsed


def _entries(document: object) -> list[Any]:
    if isinstance(document, dict) and isinstance(document.get("mailboxes"), list):
        return list(document["mailboxes"])
    return []


def _label(index: int, entries: list[Any]) -> str:
    entry = entries[index] if index < len(entries) else None
    email = entry.get("email") if isinstance(entry, dict) else None
    return f"mailboxes[{index}] ({email})" if isinstance(email, str) else f"mailboxes[{index}]"


def _describe(loc: tuple[int | str, ...], message: str, entries: list[Any]) -> str:
    """`mailboxes[1] (sam@acme.example): smtp.password: ...`, or `workspaceId: ...`."""
    if len(loc) >= 2 and loc[0] == "mailboxes" and isinstance(loc[1], int):
        field = ".".join(str(part) for part in loc[2:]) or "(entry)"
        return f"{_label(loc[1], entries)}: {field}: {message}"
    return f"{'.'.join(str(part) for part in loc) or '(root)'}: {message}"


def _repeated_emails(entries: list[Any]) -> list[str]:
    """One line per entry whose email (in any case) an earlier entry already has."""
    first: dict[str, int] = {}
    problems = []
    for index, entry in enumerate(entries):
        email = entry.get("email") if isinstance(entry, dict) else None
        if not isinstance(email, str):
            continue
        key = email.strip().lower()
        if key in first:
            problems.append(
                f"{_label(index, entries)}: email: repeats mailboxes[{first[key]}];"
                " each mailbox appears once"
            )
        else:
            first[key] = index
    return problems
