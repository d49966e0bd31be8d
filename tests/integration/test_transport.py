"""Transports against a real SMTP server on loopback, the file outbox and a text stream."""

import dataclasses
import io
import pickle
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.delivery.transport import (
    ConsoleTransport,
    DeliveryResult,
    DeliveryVerdict,
    SMTPTransport,
    Transport,
    TransportConfig,
    open_transport,
)
from core.settings import Settings, SMTPSecurity, TransportKind
from tests.support.smtp_server import LoopbackSMTP

SENDER = "sam@sender.test"
LEAD = "ada@lead.test"
GONE = "gone@lead.test"


def message(to: str = LEAD, subject: str = "Quick idea", **headers: str) -> EmailMessage:
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = SENDER, to, subject
    email["Message-ID"] = make_msgid(domain="sender.test")
    for name, value in headers.items():
        email[name] = value
    # A line starting with "." checks the dot-stuffing both ways.
    email.set_content("Hi Ada,\n\n.NET teams ship faster with us.\n\nBest,\nSam\n")
    return email


def smtp_config(server: LoopbackSMTP, **overrides: Any) -> TransportConfig:
    base = TransportConfig(
        TransportKind.smtp,
        host=server.host,
        port=server.port,
        security=SMTPSecurity.none,
        timeout=5,
    )
    return dataclasses.replace(base, **overrides)


def send(transport: Transport, to: str = LEAD, email: EmailMessage | None = None) -> DeliveryResult:
    return transport.deliver(email or message(to), sender=SENDER, recipient=to)


@pytest.fixture
def transport(smtp: LoopbackSMTP) -> Iterator[Transport]:
    opened = open_transport(smtp_config(smtp))
    yield opened
    opened.close()


# -- SMTP: delivery and connection reuse ---------------------------------------------------------


def test_accepted_delivery_has_the_exact_envelope_and_body(
    smtp: LoopbackSMTP, transport: Transport
) -> None:
    email = message()

    result = transport.deliver(email, sender=SENDER, recipient=LEAD)

    assert result.verdict is DeliveryVerdict.accepted
    assert result.detail.startswith("250 ")
    [received] = smtp.wait_for(1)
    assert (received.mail_from, received.rcpt_tos) == (SENDER, (LEAD,))
    assert received.raw == email.as_bytes(policy=SMTP_POLICY)
    assert not received.smtp_utf8


def test_one_connection_carries_a_whole_batch(smtp: LoopbackSMTP, transport: Transport) -> None:
    before = smtp.connections

    results = [send(transport, f"lead{i}@lead.test") for i in range(20)]

    assert {r.verdict for r in results} == {DeliveryVerdict.accepted}
    assert len(smtp.wait_for(20)) == 20
    assert smtp.connections - before == 1


def test_only_the_given_recipient_is_on_the_envelope(
    smtp: LoopbackSMTP, transport: Transport
) -> None:
    email = message(Cc="other@x.com", Bcc="hidden@x.com")
    email.replace_header("To", "someone.else@x.com")

    result = transport.deliver(email, sender=SENDER, recipient=LEAD)

    assert result.verdict is DeliveryVerdict.accepted
    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == (LEAD,)
    assert received.message["Cc"] == "other@x.com"
    assert "Bcc" not in received.message  # a Bcc header would reveal the blind copy
    assert email["Bcc"] == "hidden@x.com"  # the caller's message is left alone


def test_internationalised_address_uses_smtputf8(smtp: LoopbackSMTP, transport: Transport) -> None:
    result = send(transport, "jürgen@bücher.test")

    assert result.verdict is DeliveryVerdict.accepted
    [received] = smtp.wait_for(1)
    assert (received.rcpt_tos, received.smtp_utf8) == (("jürgen@bücher.test",), True)
    assert received.message["To"] == "jürgen@bücher.test"


# -- SMTP: refusals -------------------------------------------------------------------------------


def test_550_on_rcpt_bounces_and_the_connection_stays_usable(
    smtp: LoopbackSMTP, transport: Transport
) -> None:
    smtp.reject_rcpt("gone@lead.test", "550 5.1.1 User unknown")
    before = smtp.connections

    bounced = send(transport, "gone@lead.test")
    accepted = send(transport)

    assert bounced == DeliveryResult(DeliveryVerdict.bounced, "550 5.1.1 User unknown")
    assert accepted.verdict is DeliveryVerdict.accepted
    assert [m.rcpt_tos for m in smtp.wait_for(1)] == [(LEAD,)]
    assert smtp.connections - before == 1


def test_450_on_rcpt_is_transient(smtp: LoopbackSMTP, transport: Transport) -> None:
    smtp.reject_rcpt("busy@lead.test", "450 4.2.1 Mailbox busy")

    assert send(transport, "busy@lead.test") == DeliveryResult(
        DeliveryVerdict.transient, "450 4.2.1 Mailbox busy"
    )
    assert smtp.attempts("busy@lead.test") == 1
    assert send(transport).verdict is DeliveryVerdict.accepted


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("451 4.3.0 Try again later", DeliveryVerdict.transient),
        ("554 5.7.1 Message rejected as spam", DeliveryVerdict.rejected),
        ("550 5.1.1 User unknown", DeliveryVerdict.bounced),
        ("552 5.2.2 Mailbox full", DeliveryVerdict.bounced),
        ("554 Transaction failed", DeliveryVerdict.rejected),  # no enhanced code: not the address
    ],
)
def test_refusal_after_data_is_classified_by_its_status(
    smtp: LoopbackSMTP, transport: Transport, reply: str, verdict: DeliveryVerdict
) -> None:
    smtp.reject_data("picky@lead.test", reply)
    before = smtp.connections

    result = send(transport, "picky@lead.test")

    assert result == DeliveryResult(verdict, reply)
    assert smtp.messages == []
    assert send(transport).verdict is DeliveryVerdict.accepted
    assert smtp.connections - before == 1


def test_421_is_transient_and_the_next_send_reconnects(
    smtp: LoopbackSMTP, transport: Transport
) -> None:
    smtp.reject_rcpt("closing@lead.test", "421 4.3.2 Service shutting down")
    before = smtp.connections

    assert send(transport, "closing@lead.test").verdict is DeliveryVerdict.transient
    assert send(transport).verdict is DeliveryVerdict.accepted
    assert smtp.connections - before == 2


def test_detail_never_contains_the_recipient_even_when_the_server_echoes_it(
    smtp: LoopbackSMTP, transport: Transport
) -> None:
    address = "Ada.Lovelace@lead.test"
    smtp.reject_rcpt(address, f"550 5.1.1 <{address}> unknown; {address.upper()} has no mailbox")

    result = send(transport, address)

    assert result.verdict is DeliveryVerdict.bounced
    assert address.lower() not in result.detail.lower()
    assert result.detail == "550 5.1.1 <recipient> unknown; <recipient> has no mailbox"


# -- SMTP: lost connections ----------------------------------------------------------------------


def test_drop_after_the_body_is_ambiguous_and_never_retried(
    smtp: LoopbackSMTP, transport: Transport
) -> None:
    smtp.accept_then_drop("flaky@lead.test", times=1)
    before = smtp.connections

    result = send(transport, "flaky@lead.test")

    assert result.verdict is DeliveryVerdict.ambiguous
    assert "flaky@lead.test" not in result.detail
    [received] = smtp.wait_for(1)
    assert received.dropped
    assert (smtp.attempts("flaky@lead.test"), smtp.deliveries("flaky@lead.test")) == (1, 1)
    assert send(transport).verdict is DeliveryVerdict.accepted
    assert smtp.connections - before == 2


def test_a_dead_reused_connection_is_replaced_once_without_a_duplicate(smtp: LoopbackSMTP) -> None:
    transport = SMTPTransport(smtp_config(smtp))
    assert send(transport).verdict is DeliveryVerdict.accepted
    before = smtp.connections
    # Stands in for a server that closed the idle connection: the next MAIL FROM fails.
    connection = transport._connection
    assert connection is not None and connection.sock is not None
    connection.sock.shutdown(socket.SHUT_RDWR)

    result = send(transport)
    transport.close()

    assert result.verdict is DeliveryVerdict.accepted
    assert smtp.connections - before == 1
    assert len(smtp.wait_for(2)) == 2


def test_refused_connection_is_transient() -> None:
    with LoopbackSMTP() as server:
        config = smtp_config(server)
    transport = open_transport(config)

    result = send(transport)
    transport.close()

    assert result.verdict is DeliveryVerdict.transient
    assert "ConnectionRefusedError" in result.detail


def test_server_gone_mid_batch_is_transient_after_one_reconnect() -> None:
    server = LoopbackSMTP()
    server.start()
    transport = open_transport(smtp_config(server))
    try:
        assert send(transport).verdict is DeliveryVerdict.accepted
    finally:
        server.stop()

    result = send(transport)
    transport.close()

    assert result.verdict is DeliveryVerdict.transient


# -- SMTP: AUTH and TLS --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server() -> Iterator[LoopbackSMTP]:
    with LoopbackSMTP(auth=("mailer", "s3cret")) as server:
        yield server


def test_auth_with_good_credentials(auth_server: LoopbackSMTP) -> None:
    auth_server.clear()
    config = smtp_config(auth_server, username="mailer", password=SecretStr("s3cret"))
    transport = open_transport(config)

    result = send(transport)
    transport.close()

    assert result.verdict is DeliveryVerdict.accepted
    assert auth_server.wait_for(1)[0].auth_login == "mailer"


def test_auth_with_bad_credentials_is_transient(auth_server: LoopbackSMTP) -> None:
    config = smtp_config(auth_server, username="mailer", password=SecretStr("wrong"))
    transport = open_transport(config)

    result = send(transport)
    transport.close()

    assert result.verdict is DeliveryVerdict.transient
    assert result.detail.startswith("535 ")
    assert "wrong" not in result.detail


def test_missing_auth_refuses_mail_from_which_is_transient(auth_server: LoopbackSMTP) -> None:
    transport = open_transport(smtp_config(auth_server))

    result = send(transport)
    transport.close()

    assert result == DeliveryResult(DeliveryVerdict.transient, "530 5.7.0 Authentication required")


def test_open_logs_in_ahead_and_says_why_an_account_cannot_be_used(
    auth_server: LoopbackSMTP,
) -> None:
    good = open_transport(smtp_config(auth_server, username="mailer", password=SecretStr("s3cret")))
    assert good.open() is None
    good.close()
    bad = open_transport(smtp_config(auth_server, username="mailer", password=SecretStr("wrong")))
    assert bad.open() == "535 5.7.8 Authentication credentials invalid"
    # A message on a refused login is not delivered, and says the account is down.
    result = send(bad)
    assert (result.verdict, result.account_down) == (DeliveryVerdict.transient, True)
    bad.close()


def test_an_unreachable_server_takes_the_account_down_after_one_retry() -> None:
    with LoopbackSMTP() as server:
        config = smtp_config(server)
    transport = open_transport(config)  # the server is gone: every connection is refused
    assert (transport.open() or "").startswith("ConnectionRefusedError")
    result = send(transport)
    assert (result.verdict, result.account_down) == (DeliveryVerdict.transient, True)
    transport.close()


def test_a_refusal_after_login_does_not_take_the_account_down(auth_server: LoopbackSMTP) -> None:
    auth_server.reject_rcpt(GONE, "550 5.1.1 User unknown")
    config = smtp_config(auth_server, username="mailer", password=SecretStr("s3cret"))
    transport = open_transport(config)
    result = send(transport, GONE)
    transport.close()
    auth_server.reset_rules()
    assert (result.verdict, result.account_down) == (DeliveryVerdict.bounced, False)


def test_starttls_verified_against_ca_file() -> None:
    with LoopbackSMTP(starttls=True, auth=("mailer", "s3cret")) as server:
        config = smtp_config(
            server,
            security=SMTPSecurity.starttls,
            ca_file=server.cert_path,
            username="mailer",
            password=SecretStr("s3cret"),
        )
        transport = open_transport(config)
        result = send(transport)
        transport.close()

        assert result.verdict is DeliveryVerdict.accepted
        assert server.wait_for(1)[0].auth_login == "mailer"


def test_starttls_without_the_ca_fails_verification_instead_of_sending() -> None:
    with LoopbackSMTP(starttls=True) as server:
        transport = open_transport(smtp_config(server, security=SMTPSecurity.starttls))
        result = send(transport)
        transport.close()

        assert result.verdict is DeliveryVerdict.transient
        assert "SSLCertVerificationError" in result.detail
        assert server.messages == []


def test_implicit_tls_verified_against_ca_file() -> None:
    with LoopbackSMTP(implicit_tls=True) as server:
        config = smtp_config(server, security=SMTPSecurity.ssl, ca_file=server.cert_path)
        transport = open_transport(config)
        results = [send(transport) for _ in range(3)]
        transport.close()

        assert {r.verdict for r in results} == {DeliveryVerdict.accepted}
        assert len(server.wait_for(3)) == 3


# -- outbox and console --------------------------------------------------------------------------


def test_outbox_writes_one_parseable_eml_per_message(tmp_path: Path) -> None:
    transport = open_transport(TransportConfig(TransportKind.outbox, outbox_dir=tmp_path))
    emails = [message(f"lead{i}@lead.test", subject=f"Idea {i}") for i in range(3)]

    results = [send(transport, e["To"], e) for e in emails]
    transport.close()

    files = sorted(tmp_path.rglob("*.eml"))
    assert len(files) == 3
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files  # no temp files left
    assert {r.verdict for r in results} == {DeliveryVerdict.accepted}
    assert {r.detail for r in results} == {
        f"written {p.relative_to(tmp_path).as_posix()}" for p in files
    }
    parsed = {
        BytesParser(policy=default_policy).parsebytes(p.read_bytes())["Message-ID"] for p in files
    }
    assert parsed == {e["Message-ID"] for e in emails}
    for result in results:
        assert "lead.test" not in result.detail


def test_outbox_rewrites_the_same_message_id_in_place(tmp_path: Path) -> None:
    transport = open_transport(TransportConfig(TransportKind.outbox, outbox_dir=tmp_path))
    email = message()

    first, second = send(transport, LEAD, email), send(transport, LEAD, email)

    assert first == second
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


def test_console_writes_to_the_given_stream() -> None:
    stream = io.StringIO()
    transport = ConsoleTransport(TransportConfig(TransportKind.console), stream=stream)

    result = send(transport, email=message(subject="Grüße"))

    assert result.verdict is DeliveryVerdict.accepted
    output = stream.getvalue()
    assert output.startswith("-" * 24 + f" MAIL FROM:<{SENDER}> RCPT TO:<{LEAD}> ")
    assert "Subject: Grüße\n" in output
    assert ".NET teams ship faster" in output


# -- configuration -------------------------------------------------------------------------------


def test_config_from_settings_is_picklable_and_hides_the_password() -> None:
    settings = Settings(
        _env_file=None,
        smtp_host="mail.example.com",
        smtp_username="mailer",
        smtp_password=SecretStr("hunter2"),
        smtp_security=SMTPSecurity.ssl,
    )

    config = TransportConfig.from_settings(settings)

    assert (config.kind, config.host, config.port) == (TransportKind.smtp, "mail.example.com", None)
    assert config.security is SMTPSecurity.ssl
    assert "hunter2" not in repr(config)
    restored = pickle.loads(pickle.dumps(config))
    assert restored.password is not None
    assert restored.password.get_secret_value() == "hunter2"
    assert isinstance(open_transport(config), SMTPTransport)  # no connection until a delivery


@pytest.mark.parametrize(
    "config",
    [
        TransportConfig(TransportKind.smtp),
        TransportConfig(TransportKind.outbox),
        TransportConfig(TransportKind.smtp, host="localhost", ca_file=Path("/nonexistent.pem")),
    ],
)
def test_unusable_config_fails_when_opened(config: TransportConfig) -> None:
    with pytest.raises(ValueError):
        open_transport(config)
