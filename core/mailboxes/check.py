"""`mailbox check`: log in to a mailbox's SMTP and IMAP servers and say what each answered.

SMTP: EHLO, STARTTLS (when configured), AUTH, NOOP. IMAP: LOGIN, SELECT of the folder. Nothing
is sent and no message is read. An answer never holds the password: a server that echoes it
has it masked.
"""

import contextlib
import imaplib
import smtplib
import ssl
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, SecretStr

from core.mailboxes.imap_wire import error_text, quoted
from core.mailboxes.mailbox_file import ImapSpec, PasswordRef, SmtpSpec
from core.mailboxes.secrets import masked
from core.settings import SMTPSecurity

DEFAULT_CHECK_TIMEOUT = 10.0


class PasswordUnavailableError(LookupError):
    """A password reference that cannot be resolved (unset variable, missing Secret block)."""


# Resolving a reference is I/O the caller owns: the environment, or Prefect's Secret blocks.
ResolvePassword = Callable[[PasswordRef], SecretStr]


class Protocol(StrEnum):
    smtp = "SMTP"
    imap = "IMAP"


class CheckResult(BaseModel):
    """One server's verdict: OK with what was done, or the step and the server's exact answer."""

    model_config = ConfigDict(frozen=True)

    protocol: Protocol
    server: str
    ok: bool
    answer: str

    def line(self) -> str:
        """`SMTP smtp.example:587 (starttls) as alex@…: OK (…)`, one line."""
        return (
            f"{self.protocol.value} {self.server}: {'OK' if self.ok else 'FAILED'}: {self.answer}"
        )


class _RefusedError(Exception):
    """A step failed; the message is the step and what the server (or the network) said."""


def check_login(
    spec: SmtpSpec | ImapSpec,
    resolve: ResolvePassword,
    *,
    timeout: float = DEFAULT_CHECK_TIMEOUT,
    tls: ssl.SSLContext | None = None,
) -> CheckResult:
    """SMTP: EHLO, STARTTLS as configured, AUTH, NOOP. IMAP: LOGIN, SELECT of the folder."""
    context = tls or ssl.create_default_context()
    if isinstance(spec, SmtpSpec):
        server = f"{spec.host}:{spec.port} ({spec.security}) as {spec.username}"
        return _check(
            Protocol.smtp,
            server,
            resolve,
            spec.password,
            lambda pw: _smtp(spec, pw, timeout, context),
        )
    server = f"{spec.host}:{spec.port} ({'ssl' if spec.ssl else 'plain'}) as {spec.username}"
    return _check(
        Protocol.imap, server, resolve, spec.password, lambda pw: _imap(spec, pw, timeout, context)
    )


def _check(
    protocol: Protocol,
    server: str,
    resolve: ResolvePassword,
    ref: PasswordRef,
    talk: Callable[[str], str],
) -> CheckResult:
    """Resolve the password, run the conversation, and mask the password in whatever came back."""
    try:
        secret = resolve(ref).get_secret_value()
    except PasswordUnavailableError as exc:
        return CheckResult(protocol=protocol, server=server, ok=False, answer=str(exc))
    try:
        answer, ok = talk(secret), True
    except _RefusedError as exc:
        answer, ok = str(exc), False
    return CheckResult(protocol=protocol, server=server, ok=ok, answer=masked(answer, secret))


def _smtp(spec: SmtpSpec, secret: str, timeout: float, context: ssl.SSLContext) -> str:
    step = "connect"
    connection: smtplib.SMTP | None = None
    try:
        if spec.security is SMTPSecurity.ssl:
            connection = smtplib.SMTP_SSL(spec.host, spec.port, timeout=timeout, context=context)
        else:
            connection = smtplib.SMTP(spec.host, spec.port, timeout=timeout)
        step = "EHLO"
        connection.ehlo()
        if spec.security is SMTPSecurity.starttls:
            step = "STARTTLS"
            connection.starttls(context=context)
            connection.ehlo()
        step = "AUTH"
        connection.login(spec.username, secret)
        step = "NOOP"
        code, reply = connection.noop()
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)
        step = "done"
    except smtplib.SMTPResponseException as exc:
        raise _RefusedError(f"{step} refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise _RefusedError(f"{step} failed: {error_text(exc)}") from None
    finally:
        if connection is not None:
            _quietly(connection.quit if step == "done" else connection.close)
    if spec.security is SMTPSecurity.starttls:
        return "EHLO, STARTTLS, AUTH, NOOP"
    return "EHLO, AUTH, NOOP"


def _imap(spec: ImapSpec, secret: str, timeout: float, context: ssl.SSLContext) -> str:
    step = "connect"
    client: imaplib.IMAP4 | None = None
    try:
        if spec.ssl:
            client = imaplib.IMAP4_SSL(spec.host, spec.port, ssl_context=context, timeout=timeout)
        else:
            client = imaplib.IMAP4(spec.host, spec.port, timeout=timeout)
        step = "LOGIN"
        client.login(quoted(spec.username), secret)
        step = f"SELECT {spec.folder}"
        status, data = client.select(quoted(spec.folder))
        if status != "OK":
            raise imaplib.IMAP4.error(_text(data[0]) if data else status)
        messages = _text(data[0]) if data else "?"
    except imaplib.IMAP4.error as exc:
        raise _RefusedError(f"{step} refused: {error_text(exc)}") from None
    except OSError as exc:
        raise _RefusedError(f"{step} failed: {error_text(exc)}") from None
    finally:
        if client is not None:
            _quietly(client.logout)
    return f"LOGIN, SELECT {spec.folder} ({messages} messages)"


def _quietly(close: Callable[[], object]) -> None:
    # The verdict is already known; a failed goodbye changes nothing.
    with contextlib.suppress(imaplib.IMAP4.error, smtplib.SMTPException, OSError):
        close()


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
