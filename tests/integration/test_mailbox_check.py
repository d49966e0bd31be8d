"""`mailbox check` against real loopback servers: logins that work, and each way one fails."""

import socket
import ssl

import pytest
from pydantic import SecretStr

from core.mailboxes.check import PasswordUnavailableError, check_login
from core.mailboxes.mailbox_file import ImapSpec, PasswordRef, SmtpSpec
from tasks.mailbox_passwords import resolve_password
from tests.support.imap_server import LoopbackIMAP
from tests.support.smtp_server import LoopbackSMTP

USER, PASSWORD = "alex@acme.example", "s3cret-pw"


def _resolve(ref: PasswordRef) -> SecretStr:
    return resolve_password(ref, {"ALEX_PW": PASSWORD, "WRONG_PW": "not-it"})


def _smtp(server, security, password="env:ALEX_PW"):
    return SmtpSpec.model_validate(
        {
            "host": server.host,
            "port": server.port,
            "security": security,
            "username": USER,
            "password": password,
        }
    )


def _trust(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.cert_path))


@pytest.mark.parametrize(
    ("options", "security", "steps"),
    [
        ({"starttls": True, "require_tls": True}, "starttls", "EHLO, STARTTLS, AUTH, NOOP"),
        ({"implicit_tls": True}, "ssl", "EHLO, AUTH, NOOP"),
        ({}, "none", "EHLO, AUTH, NOOP"),
    ],
)
def test_smtp_login_ok_for_each_security(options, security, steps):
    with LoopbackSMTP(auth=(USER, PASSWORD), **options) as server:
        tls = _trust(server) if server.cert_path else None
        result = check_login(_smtp(server, security), _resolve, tls=tls)
    assert (result.ok, result.answer) == (True, steps), result
    assert result.line().startswith(f"SMTP 127.0.0.1:{server.port} ({security}) as {USER}: OK")


def test_smtp_wrong_password_gives_the_servers_answer_without_the_password():
    with LoopbackSMTP(auth=(USER, PASSWORD), starttls=True) as server:
        result = check_login(
            _smtp(server, "starttls", "env:WRONG_PW"), _resolve, tls=_trust(server)
        )
    assert not result.ok
    assert result.answer.startswith("AUTH refused: 535 "), result.answer
    assert "not-it" not in result.line() and PASSWORD not in result.line()


def test_smtp_untrusted_certificate_and_closed_port_are_failures():
    with LoopbackSMTP(auth=(USER, PASSWORD), starttls=True) as server:
        result = check_login(_smtp(server, "starttls"), _resolve)
    assert not result.ok and result.answer.startswith("STARTTLS failed: "), result.answer
    assert "CERTIFICATE_VERIFY_FAILED" in result.answer
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = _smtp(server, "none").model_copy(update={"port": port})
    result = check_login(closed, _resolve, timeout=2)
    assert not result.ok and result.answer.startswith("connect failed: "), result.answer


def test_an_unset_variable_is_reported_before_connecting():
    spec = SmtpSpec.model_validate(
        {"host": "192.0.2.1", "username": USER, "password": "env:NOT_SET_ANYWHERE"}
    )
    result = check_login(spec, _resolve)
    assert not result.ok
    assert (
        result.answer
        == "env:NOT_SET_ANYWHERE: the environment variable NOT_SET_ANYWHERE is not set"
    )
    with pytest.raises(PasswordUnavailableError):
        resolve_password(PasswordRef.parse("env:ALEX_PW"), {})


def _imap(server, password="env:ALEX_PW", folder="INBOX"):
    return ImapSpec.model_validate(
        {
            "host": server.host,
            "port": server.port,
            "ssl": server.implicit_tls,
            "username": USER,
            "password": password,
            "folder": folder,
        }
    )


def test_imap_login_and_select_over_tls():
    with LoopbackIMAP(auth=(USER, PASSWORD), implicit_tls=True) as server:
        result = check_login(_imap(server), _resolve, tls=_trust(server))
        assert server.commands[1].split()[1:3] == ["LOGIN", "***"]
    assert (result.ok, result.answer) == (True, "LOGIN, SELECT INBOX (0 messages)"), result
    assert result.line().startswith(f"IMAP 127.0.0.1:{server.port} (ssl) as {USER}: OK")


def test_imap_wrong_password_and_missing_folder_give_the_servers_answer():
    with LoopbackIMAP(auth=(USER, PASSWORD)) as server:
        wrong = check_login(_imap(server, "env:WRONG_PW"), _resolve)
        missing = check_login(_imap(server, folder="Replies"), _resolve)
    assert not wrong.ok
    assert wrong.answer == "LOGIN refused: [AUTHENTICATIONFAILED] Invalid credentials"
    assert not missing.ok
    assert missing.answer == "SELECT Replies refused: [NONEXISTENT] Mailbox does not exist"


def test_imap_untrusted_certificate_is_a_failure_before_login():
    with LoopbackIMAP(auth=(USER, PASSWORD), implicit_tls=True) as server:
        result = check_login(_imap(server), _resolve)
        assert server.logins == 0
    assert not result.ok and result.answer.startswith("connect failed: "), result.answer
    assert "CERTIFICATE_VERIFY_FAILED" in result.answer
