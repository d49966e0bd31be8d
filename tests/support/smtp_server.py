"""A real SMTP server on loopback (aiosmtpd) that records mail and fails recipients on demand.

Usage::

    with LoopbackSMTP(auth=("user", "secret")) as smtp:
        smtp.reject_rcpt("gone@example.com", "550 5.1.1 User unknown")
        smtp.accept_then_drop("flaky@example.com", times=1)
        ...  # send with smtplib to smtp.host / smtp.port
        smtp.wait_for(1)[0].message["Subject"]

Rules are keyed by recipient (case-insensitive); ``"*"`` applies to recipients without a rule.
AUTH (PLAIN/LOGIN) is offered on the plain connection (``auth_require_tls=False``) unless
``require_tls=True``; when ``auth`` is set, MAIL without a successful AUTH gets ``530``. ``auth``
is one login ``(user, password)`` or several, ``{user: password}`` (one per sending mailbox); each
message records the login it was sent under (``auth_login``).
``starttls=True`` offers STARTTLS, ``implicit_tls=True`` speaks TLS from the first byte (SMTPS);
either way clients trust ``cert_path``, a self-signed certificate for localhost and 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import logging
import re
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["LoopbackSMTP", "ReceivedMessage"]

_REPLY = re.compile(r"^[245]\d\d[ -]")
Stage = Literal["rcpt", "data", "drop"]


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    """Drop aiosmtpd's deprecation notice, which it logs on every successful AUTH."""
    return not str(record.msg).startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_not_login_data_notice)


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the server accepted (``dropped``: taken, then the final 250 was withheld)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    received_at: float
    dropped: bool
    auth_login: str | None
    smtp_utf8: bool

    @cached_property
    def message(self) -> EmailMessage:
        """The parsed message (``email.policy.default``, CRLF line ends read as ``\\n``)."""
        text = self.raw.replace(b"\r\n", b"\n")
        message = BytesParser(policy=default_policy).parsebytes(text)
        assert isinstance(message, EmailMessage)  # email.policy.default builds EmailMessage
        return message


@dataclass
class _Rule:
    stage: Stage
    reply: str
    remaining: int | None  # None: every time


class _Handler:
    """aiosmtpd hooks; runs on the controller's event loop thread."""

    def __init__(self, owner: LoopbackSMTP) -> None:
        self.owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Refuse senders until AUTH succeeded, when credentials are configured."""
        if self.owner.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Count the attempt; answer with the recipient's RCPT rule, if any."""
        rule = self.owner._on_rcpt(address)
        if rule is not None:
            return rule.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Reject, record, or record and drop the connection, per the recipients' rules."""
        rule = self.owner._on_data(envelope, session)
        if rule is not None and rule.stage == "data":
            return rule.reply
        if rule is not None:  # "drop": the message is recorded, the 250 never goes out
            assert server.transport is not None
            server.transport.close()
            await asyncio.get_running_loop().create_future()  # cancelled by connection_lost
        return "250 OK"


class _Controller(Controller):
    """aiosmtpd Controller serving on an already-bound socket (no free-port race)."""

    def __init__(self, handler: _Handler, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        self.connections = 0
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def factory(self) -> SMTP:
        """Count the connection, then build its SMTP protocol."""
        self.connections += 1
        return super().factory()

    def _create_server(self) -> Any:
        """Serve on the pre-bound socket (with TLS from the first byte when given a context)."""
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed cert for localhost/127.0.0.1; return (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class LoopbackSMTP:
    """Threaded aiosmtpd server on 127.0.0.1 with recording and per-recipient faults."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] | dict[str, str] | None = None,
        starttls: bool = False,
        require_tls: bool = False,
        implicit_tls: bool = False,
        keep_messages: bool = True,
        hostname: str = "localhost",
        on_accept: Callable[[bytes], None] | None = None,
    ) -> None:
        if implicit_tls and (starttls or require_tls):
            raise ValueError("implicit_tls already encrypts; starttls/require_tls do not apply")
        self.auth = auth
        self.starttls = starttls or require_tls
        self.require_tls = require_tls
        self.implicit_tls = implicit_tls
        self.keep_messages = keep_messages
        self.hostname = hostname
        # Called with each accepted message's bytes, e.g. to file it in an IMAP Sent folder.
        self.on_accept = on_accept
        self.host = "127.0.0.1"
        self.port = 0
        self.cert_path: Path | None = None  # CA file for clients when STARTTLS or SMTPS is on
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._rules: dict[str, _Rule] = {}
        self._attempts: Counter[str] = Counter()
        self._deliveries: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._controller: _Controller | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> LoopbackSMTP:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind a free loopback port and serve until ``stop``."""
        kwargs: dict[str, Any] = {
            "server_hostname": self.hostname,  # else aiosmtpd calls getfqdn() per connection
            "ident": "LoopbackSMTP",
            "enable_SMTPUTF8": True,
            "authenticator": self._authenticate,
            # without credentials AUTH is not advertised on the plain connection at all
            "auth_require_tls": self.require_tls or self.auth is None,
            "ready_timeout": 10.0,
        }
        if self.starttls or self.implicit_tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="loopback-smtp-")
            cert, key = _self_signed(Path(self._tmp.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.cert_path = cert
            if self.implicit_tls:
                kwargs["ssl_context"] = context
            else:
                kwargs |= {"tls_context": context, "require_starttls": self.require_tls}
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self._controller = _Controller(_Handler(self), sock, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        """Stop the server thread and remove any generated certificate."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- behaviour -------------------------------------------------------------------------

    def _set(self, address: str, stage: Stage, reply: str, times: int | None) -> None:
        if not _REPLY.match(reply + " "):
            raise ValueError(f"SMTP reply must start with a 2xx/4xx/5xx code: {reply!r}")
        with self._cond:
            self._rules[address.lower()] = _Rule(stage, reply, times)

    def reject_rcpt(
        self, address: str, reply: str = "550 5.1.1 User unknown", *, times: int | None = None
    ) -> None:
        """Answer RCPT TO for ``address`` with ``reply`` (e.g. ``"450 4.2.1 Mailbox busy"``)."""
        self._set(address, "rcpt", reply, times)

    def reject_data(
        self, address: str, reply: str = "451 4.3.0 Try again later", *, times: int | None = None
    ) -> None:
        """Take the DATA of a transaction including ``address``, then answer ``reply``."""
        self._set(address, "data", reply, times)

    def accept_then_drop(self, address: str, *, times: int | None = None) -> None:
        """Record the message, then close the connection instead of sending the final 250."""
        self._set(address, "drop", "250 dropped", times)

    def accept(self, address: str) -> None:
        """Remove any rule for ``address``."""
        with self._cond:
            self._rules.pop(address.lower(), None)

    def reset_rules(self) -> None:
        """Accept every recipient again."""
        with self._cond:
            self._rules.clear()

    # -- observation -----------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted so far, oldest first."""
        with self._cond:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """How many SMTP connections were opened (including the startup probe)."""
        return self._controller.connections if self._controller else 0

    def messages_to(self, address: str) -> list[ReceivedMessage]:
        """Accepted messages whose envelope includes ``address``."""
        key = address.lower()
        return [m for m in self.messages if key in (r.lower() for r in m.rcpt_tos)]

    def attempts(self, address: str) -> int:
        """How many times RCPT TO was seen for ``address``."""
        with self._cond:
            return self._attempts[address.lower()]

    def deliveries(self, address: str) -> int:
        """How many accepted messages (dropped ones included) named ``address``."""
        with self._cond:
            return self._deliveries[address.lower()]

    def rejections(self, address: str) -> int:
        """How many RCPT or DATA rejections ``address`` caused."""
        with self._cond:
            return self._rejections[address.lower()]

    def clear(self) -> None:
        """Forget recorded messages and counters (rules are kept)."""
        with self._cond:
            self._messages.clear()
            self._attempts.clear()
            self._deliveries.clear()
            self._rejections.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"{len(self._messages)} of {count} messages after {timeout}s")
            return list(self._messages)

    # -- hooks (event-loop thread) ---------------------------------------------------------

    def _rule_for(self, address: str, stages: tuple[Stage, ...]) -> _Rule | None:
        rule = self._rules.get(address.lower()) or self._rules.get("*")
        if rule is None or rule.stage not in stages:
            return None
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._rules = {k: v for k, v in self._rules.items() if v is not rule}
        return rule

    def _on_rcpt(self, address: str) -> _Rule | None:
        with self._cond:
            self._attempts[address.lower()] += 1
            rule = self._rule_for(address, ("rcpt",))
            if rule is not None:
                self._rejections[address.lower()] += 1
            return rule

    def _on_data(self, envelope: Envelope, session: Session) -> _Rule | None:
        with self._cond:
            rule = None
            for address in envelope.rcpt_tos:
                rule = self._rule_for(address, ("data", "drop"))
                if rule is not None:
                    break
            if rule is not None and rule.stage == "data":
                for address in envelope.rcpt_tos:
                    self._rejections[address.lower()] += 1
                return rule
            for address in envelope.rcpt_tos:
                self._deliveries[address.lower()] += 1
            if self.on_accept is not None:
                self.on_accept(envelope.original_content or b"")
            if self.keep_messages:
                self._messages.append(
                    ReceivedMessage(
                        mail_from=envelope.mail_from or "",
                        rcpt_tos=tuple(envelope.rcpt_tos),
                        raw=envelope.original_content or b"",
                        received_at=time.time(),
                        dropped=rule is not None,
                        auth_login=session.auth_data if session.authenticated else None,
                        smtp_utf8=envelope.smtp_utf8,
                    )
                )
            self._cond.notify_all()
            return rule

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        logins = dict([self.auth]) if isinstance(self.auth, tuple) else self.auth
        password = logins.get(data.login.decode(errors="replace"))
        if password is None or data.password != password.encode():
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=data.login.decode())


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``--bench`` prints messages/s over one smtplib connection."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.bench:
        from tests.support.bench import bench_smtp

        bench_smtp(args.count)
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
