"""Delivery of one rendered message to one recipient, behind the small `Transport` interface.

A provider API (Resend, Postmark…) is one more class with `deliver`/`close` plus an entry in
`TRANSPORTS`; flows only ever call `open_transport(config)`.

Every `DeliveryResult.detail` is safe to store and log: it holds the server's reply or an error
class, with the recipient's address replaced by ``<recipient>``. Nothing here logs an address,
a mailbox or a body above DEBUG.

Transports are not thread-safe: open one per worker (a `TransportPool` hands each to one lane
at a time).
"""

import contextlib
import copy
import datetime as dt
import email.policy
import logging
import os
import re
import smtplib
import ssl
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TextIO

from pydantic import SecretStr

from core.settings import Settings, SMTPSecurity, TransportKind

_log = logging.getLogger(__name__)

DEFAULT_PORTS: dict[SMTPSecurity, int] = {
    SMTPSecurity.ssl: 465,
    SMTPSecurity.starttls: 587,
    SMTPSecurity.none: 25,
}

# Headers whose addresses end up on the wire; a non-ASCII mailbox in any of them needs SMTPUTF8,
# because the plain SMTP policy would mangle it into an (invalid) encoded-word.
_ADDRESS_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc")
# RFC 3463 enhanced status code at the start of the reply text, e.g. "5.1.1".
_ENHANCED_STATUS = re.compile(rb"^([245])\.(\d{1,3})\.\d{1,3}\b")
_FILE_STEM_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_CONSOLE_POLICY = email.policy.default.clone(utf8=True)


class DeliveryVerdict(StrEnum):
    """What a transport says became of one delivery attempt."""

    accepted = "accepted"  # the server took the message (final 250)
    # Not delivered, try later: 4xx anywhere, connection lost before the body was handed over,
    # MAIL FROM or AUTH refused (a sender/config problem, not the recipient's).
    transient = "transient"
    bounced = "bounced"  # permanent for this recipient: 5xx on RCPT, or 5.1.x/5.2.x on DATA
    rejected = "rejected"  # permanent but not the address's fault, e.g. 554 5.7.1 content policy
    # The body was handed over and no final reply came: it may have been delivered, so it must
    # never be retried automatically.
    ambiguous = "ambiguous"


@dataclass(frozen=True)
class DeliveryResult:
    """The verdict and a storable detail that never contains the recipient's address."""

    verdict: DeliveryVerdict
    detail: str
    # The sending account cannot be used: login refused, or the server unreachable after the
    # transport's retry. Nothing was delivered (the verdict is transient).
    account_down: bool = False


class Transport(Protocol):
    """Delivers messages one recipient at a time; `close` releases any connection."""

    name: str

    def deliver(self, message: EmailMessage, *, sender: str, recipient: str) -> DeliveryResult:
        """Deliver `message` with envelope `sender` to `recipient` only; never raises for I/O."""
        ...

    def close(self) -> None:
        """Release connections; the transport may not be used afterwards."""
        ...

    def open(self) -> str | None:
        """Connect and log in now: the answer when the account cannot be used, else None."""
        ...


@dataclass(frozen=True)
class TransportConfig:
    """Everything a transport needs; picklable, and the password stays masked in `repr`."""

    kind: TransportKind
    host: str | None = None
    port: int | None = None  # None: the usual port of `security`
    username: str | None = None
    password: SecretStr | None = None
    security: SMTPSecurity = SMTPSecurity.starttls
    timeout: float = 30.0
    outbox_dir: Path | None = None
    ca_file: Path | None = None  # extra trusted CA for TLS; None: the system trust store only

    @classmethod
    def from_settings(cls, settings: Settings) -> "TransportConfig":
        """The configuration of the transport selected by `settings`."""
        return cls(
            kind=settings.transport,
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            security=settings.smtp_security,
            timeout=settings.smtp_timeout_seconds,
            outbox_dir=settings.outbox_dir,
        )


# -- shared helpers ----------------------------------------------------------------------------


def _scrubbed(
    verdict: DeliveryVerdict, detail: str, recipient: str, *, account_down: bool = False
) -> DeliveryResult:
    """A result whose detail has every spelling of `recipient` replaced by ``<recipient>``."""
    # Most replies ("250 OK") never name the recipient: test before compiling a pattern that,
    # holding the address, the re module's cache would never reuse.
    if recipient and recipient.lower() in detail.lower():
        address = re.escape(recipient)
        detail = re.sub(rf"<{address}>|{address}", "<recipient>", detail, flags=re.IGNORECASE)
    return DeliveryResult(verdict, detail, account_down)


def _reply_detail(code: int, reply: bytes | str) -> str:
    """``"550 5.1.1 User unknown"`` from smtplib's code and (possibly multi-line) reply."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return f"{code} {' '.join(text.split())}".strip()


def _error_detail(error: BaseException) -> str:
    """The error class and message, or the server's reply when the error carries one."""
    if isinstance(error, smtplib.SMTPResponseException):
        return _reply_detail(error.smtp_code, error.smtp_error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _needs_smtputf8(message: EmailMessage, sender: str, recipient: str) -> bool:
    """Whether an address on the envelope or in the headers is non-ASCII."""
    if not (sender.isascii() and recipient.isascii()):
        return True
    values = [str(value) for name in _ADDRESS_HEADERS for value in message.get_all(name, [])]
    if all(value.isascii() for value in values):  # the usual case, without parsing addresses
        return False
    # Only the address itself counts: a non-ASCII display name is fine as an encoded-word.
    return not all(address.isascii() for _, address in getaddresses(values))


def _wire_bytes(message: EmailMessage, *, smtputf8: bool) -> bytes:
    """The message as sent: CRLF line ends, and without Bcc (it would reveal the blind copies)."""
    if "Bcc" in message or "Resent-Bcc" in message:
        message = _copy_without_bcc(message)
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    return message.as_bytes(policy=policy)


def _copy_without_bcc(message: EmailMessage) -> EmailMessage:
    """A copy without Bcc headers; the caller's message is left as it was."""
    stripped = copy.copy(message)
    # __delitem__ rebinds the header list, so the shallow copy never edits the original's.
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    return stripped


# -- SMTP ----------------------------------------------------------------------------------------


# AUTH refused (535 bad login, 534 another login wanted, 530 AUTH required): the mailbox's fault.
AUTH_FAILURES = frozenset({530, 534, 535})


class _ConnectionLostError(Exception):
    """The connection failed before the body was handed over, so nothing was delivered."""

    def __init__(self, detail: str, *, account_down: bool = False) -> None:
        super().__init__(detail)
        self.account_down = account_down  # connecting failed: see `account_error`


def account_error(error: BaseException) -> bool:
    """Whether a failed connect means the account cannot be used: AUTH refused, or no server."""
    # smtplib's errors are OSErrors too: only a dropped greeting among them means no server.
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code in AUTH_FAILURES
    if isinstance(error, smtplib.SMTPException):
        return isinstance(error, smtplib.SMTPServerDisconnected)
    return isinstance(error, OSError) and not isinstance(error, ssl.SSLError)  # a bad certificate


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """System trust plus `ca_file`, with hostname checking on."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"ca_file {ca_file} is not a usable CA file: {error}") from error
    return context


def _rcpt_verdict(code: int) -> DeliveryVerdict:
    """A refused RCPT: 5xx is this address's permanent failure, anything else is temporary."""
    return DeliveryVerdict.bounced if 500 <= code < 600 else DeliveryVerdict.transient


def _data_verdict(code: int, reply: bytes) -> DeliveryVerdict:
    """A refused DATA: only 5.1.x (address) and 5.2.x (mailbox) blame the recipient."""
    if not 500 <= code < 600:
        return DeliveryVerdict.transient
    status = _ENHANCED_STATUS.match(reply)
    if status is not None and status[1] == b"5" and status[2] in (b"1", b"2"):
        return DeliveryVerdict.bounced
    return DeliveryVerdict.rejected


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA section for `payload` (CRLF lines): leading dots doubled, then CRLF . CRLF."""
    stuffed = re.sub(rb"(?m)^\.", b"..", payload)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


class SMTPTransport:
    """smtplib over one lazily opened connection, reused for every delivery until `close`."""

    name = "smtp"

    def __init__(self, config: TransportConfig) -> None:
        if not config.host:
            raise ValueError("the smtp transport needs a host (SMTP_HOST)")
        self._config = config
        self._host = config.host
        self._port = config.port or DEFAULT_PORTS[config.security]
        self._tls = None if config.security is SMTPSecurity.none else _tls_context(config.ca_file)
        self._connection: smtplib.SMTP | None = None
        self._account_down = False

    def deliver(self, message: EmailMessage, *, sender: str, recipient: str) -> DeliveryResult:
        """Run MAIL/RCPT/DATA for `recipient` alone; a lost connection is retried once."""
        smtputf8 = _needs_smtputf8(message, sender, recipient)
        payload = _wire_bytes(message, smtputf8=smtputf8)
        self._account_down = False
        try:
            verdict, detail = self._transaction(payload, sender, recipient, smtputf8)
        except _ConnectionLostError:
            # Typically a reused connection the server had closed while idle.
            _log.debug("SMTP connection to %s:%d lost; reconnecting once", self._host, self._port)
            try:
                verdict, detail = self._transaction(payload, sender, recipient, smtputf8)
            except _ConnectionLostError as lost:
                verdict, detail = DeliveryVerdict.transient, str(lost)
                self._account_down = lost.account_down
        return _scrubbed(verdict, detail, recipient, account_down=self._account_down)

    def open(self) -> str | None:
        """Log in now: the answer when AUTH is refused or the server stays unreachable (tried
        twice), else None (any other problem `deliver` reports per message)."""
        for last in (False, True):
            try:
                self._connect()
                return None
            except (smtplib.SMTPException, OSError) as error:
                if not account_error(error):
                    return None
                if last or isinstance(error, smtplib.SMTPResponseException):
                    return _error_detail(error)
        return None

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def _transaction(
        self, payload: bytes, sender: str, recipient: str, smtputf8: bool
    ) -> tuple[DeliveryVerdict, str]:
        """One attempt; raises `_ConnectionLostError` only while a retry cannot send it twice."""
        try:
            connection = self._connect()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            # smtplib's errors are OSErrors: a refused AUTH or STARTTLS lands here too.
            detail = _error_detail(error)
            raise _ConnectionLostError(detail, account_down=account_error(error)) from error
        except smtplib.SMTPException as error:  # greeting, EHLO, STARTTLS or AUTH refused
            return DeliveryVerdict.transient, _error_detail(error)

        options = []
        if smtputf8:
            if not connection.has_extn("smtputf8"):
                return DeliveryVerdict.rejected, "server does not support SMTPUTF8"
            options.append("SMTPUTF8")
        # Without 8BITMIME an 8-bit body is sent as is: most servers take it, and refusing
        # here would fail mail that would almost surely have gone through.
        if not payload.isascii() and connection.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")

        try:
            code, reply = connection.mail(sender, options)
            if not 200 <= code < 300:
                return self._refused(DeliveryVerdict.transient, code, reply)
            code, reply = connection.rcpt(recipient)
            if not 200 <= code < 300:
                return self._refused(_rcpt_verdict(code), code, reply)
            code, reply = connection.docmd("DATA")
            if code != 354:
                return self._refused(_data_verdict(code, reply), code, reply)
        except (smtplib.SMTPException, OSError) as error:
            self._drop()
            raise _ConnectionLostError(_error_detail(error)) from error

        try:
            connection.send(_dot_stuffed(payload))
        except (smtplib.SMTPException, OSError) as error:
            # sendall failed, so the closing "." never fully left: the server cannot have
            # accepted the message. Not retried here all the same, as the body may be at fault.
            self._drop()
            return DeliveryVerdict.transient, _error_detail(error)

        try:
            code, reply = connection.getreply()
        except (smtplib.SMTPException, OSError) as error:
            self._drop()
            return DeliveryVerdict.ambiguous, _error_detail(error)
        if 200 <= code < 300:
            return DeliveryVerdict.accepted, _reply_detail(code, reply)
        return self._refused(_data_verdict(code, reply), code, reply)

    def _connect(self) -> smtplib.SMTP:
        """The open connection, or a new one: EHLO, STARTTLS and AUTH as configured."""
        if self._connection is not None:
            return self._connection
        config = self._config
        if config.security is SMTPSecurity.ssl:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                self._host, self._port, timeout=config.timeout, context=self._tls
            )
        else:
            connection = smtplib.SMTP(self._host, self._port, timeout=config.timeout)
        try:
            connection.ehlo_or_helo_if_needed()
            if config.security is SMTPSecurity.starttls:
                connection.starttls(context=self._tls)
                connection.ehlo_or_helo_if_needed()
            if config.username:
                password = config.password.get_secret_value() if config.password else ""
                connection.login(config.username, password)
        except BaseException:
            connection.close()
            raise
        _log.debug("SMTP connected to %s:%d (%s)", self._host, self._port, config.security)
        self._connection = connection
        return connection

    def _refused(
        self, verdict: DeliveryVerdict, code: int, reply: bytes
    ) -> tuple[DeliveryVerdict, str]:
        """End the refused transaction so the connection can carry the next one."""
        if code == 421 or code < 0:  # the server is closing the channel, or talks nonsense
            self._drop()
        else:
            self._reset()
        return verdict, _reply_detail(code, reply)

    def _reset(self) -> None:
        """RSET; a connection that cannot even do that is dropped."""
        if self._connection is None:
            return
        try:
            code, _ = self._connection.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._drop()

    def _drop(self) -> None:
        """Close the socket without QUIT; the next delivery reconnects."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


# -- files and console -------------------------------------------------------------------------


def _file_stem(message: EmailMessage) -> str:
    """A file name from the Message-ID (so a resend overwrites), else a random one."""
    message_id = str(message.get("Message-ID", "")).strip().strip("<>")
    stem = _FILE_STEM_UNSAFE.sub("_", message_id).lstrip(".")[:200]
    return stem or uuid.uuid4().hex


def _write_atomically(target: Path, payload: bytes) -> None:
    """Write via a temporary file in the same directory, so readers never see half a file."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class OutboxTransport:
    """Writes ``{outbox_dir}/{UTC date}/{message-id}.eml`` per delivery, as it would be sent."""

    name = "outbox"

    def __init__(self, config: TransportConfig) -> None:
        if config.outbox_dir is None:
            raise ValueError("the outbox transport needs outbox_dir (OUTBOX_DIR)")
        self._root = config.outbox_dir

    def deliver(self, message: EmailMessage, *, sender: str, recipient: str) -> DeliveryResult:
        """Write the message; a failed write (disk full, permissions) is transient."""
        payload = _wire_bytes(message, smtputf8=_needs_smtputf8(message, sender, recipient))
        relative = Path(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")) / f"{_file_stem(message)}.eml"
        target = self._root / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, payload)
        except OSError as error:
            return _scrubbed(DeliveryVerdict.transient, _error_detail(error), recipient)
        return _scrubbed(DeliveryVerdict.accepted, f"written {relative.as_posix()}", recipient)

    def close(self) -> None:
        """Nothing to release."""

    def open(self) -> str | None:
        """Nothing to log in to."""
        return None


class ConsoleTransport:
    """Prints each message after a separator naming its envelope; for development."""

    name = "console"

    def __init__(self, config: TransportConfig, stream: TextIO | None = None) -> None:
        # config has nothing for the console; the parameter keeps the registry signature.
        self._stream = stream

    def deliver(self, message: EmailMessage, *, sender: str, recipient: str) -> DeliveryResult:
        """Write the message as readable UTF-8 text; a failed write is transient."""
        # Resolved per call so a swapped sys.stdout (pytest's capture, a redirect) is honoured.
        stream = self._stream if self._stream is not None else sys.stdout
        text = message.as_string(policy=_CONSOLE_POLICY)
        try:
            stream.write(f"{'-' * 24} MAIL FROM:<{sender}> RCPT TO:<{recipient}> {'-' * 24}\n")
            stream.write(text if text.endswith("\n") else text + "\n")
            stream.flush()
        except OSError as error:
            return _scrubbed(DeliveryVerdict.transient, _error_detail(error), recipient)
        return DeliveryResult(DeliveryVerdict.accepted, "printed")

    def close(self) -> None:
        """The stream belongs to the caller and stays open."""

    def open(self) -> str | None:
        """Nothing to log in to."""
        return None


TRANSPORTS: dict[TransportKind, Callable[[TransportConfig], Transport]] = {
    TransportKind.smtp: SMTPTransport,
    TransportKind.outbox: OutboxTransport,
    TransportKind.console: ConsoleTransport,
}


def open_transport(config: TransportConfig) -> Transport:
    """The transport for `config.kind`; raises ValueError when the configuration is unusable."""
    factory = TRANSPORTS.get(config.kind)
    if factory is None:
        raise ValueError(f"no transport registered for {config.kind!r}")
    return factory(config)


class TransportPool:
    """Transports left open from one batch of a run to the next, by configuration, so a mailbox
    logs in once a run for each of its connections rather than once a batch. Only a lane that
    ended in order gives its transport back (a connection the server closed meanwhile is opened
    again by `SMTPTransport.deliver`); `close` says QUIT on the ones it holds. Thread-safe: the
    lanes of a batch are threads."""

    def __init__(self) -> None:
        self._idle: dict[TransportConfig, list[Transport]] = {}
        self._lock = threading.Lock()

    def take(self, config: TransportConfig) -> Transport:
        """An idle transport of `config`, else a new one; open_transport's errors."""
        with self._lock:
            idle = self._idle.get(config)
            if idle:
                return idle.pop()
        return open_transport(config)

    def give_back(self, config: TransportConfig, transport: Transport) -> None:
        """Keep `transport` for the next lane of `config`."""
        with self._lock:
            self._idle.setdefault(config, []).append(transport)

    def close(self) -> None:
        """Close every transport it holds."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for transports in idle.values():
            for transport in transports:
                transport.close()
