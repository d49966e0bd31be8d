"""The loopback fake OpenAI server and SMTP server behave like the real things they stand in for."""

import asyncio
import contextlib
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import openai
import pydantic
import pytest
from openai import AsyncOpenAI

from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.openai_wire import PERSONAL_LINE
from tests.support.smtp_server import LoopbackSMTP

PROMPT = (
    "Personalise for Ada.\n<draft_subject>Quick idea for Example Corp</draft_subject>\n"
    "<draft_body>Hi Ada,\n\nWe help teams ship faster.\n\nBest,\nSam</draft_body>"
)


class EmailDraft(pydantic.BaseModel):
    subject: str
    body: str


def complete(server: FakeOpenAI, prompt: str = PROMPT, **client_args: Any) -> EmailDraft:
    """Run one ``chat.completions.parse`` call with the real client; return the parsed draft."""

    async def call() -> EmailDraft:
        options = {"max_retries": 0, "timeout": 5.0} | client_args
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", **options) as client:
            completion = await client.chat.completions.parse(
                model="gpt-test",
                messages=[
                    {"role": "system", "content": "Write."},
                    {"role": "user", "content": prompt},
                ],
                response_format=EmailDraft,
            )
        parsed = completion.choices[0].message.parsed
        assert parsed is not None
        return parsed

    return asyncio.run(call())


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm(llm_server: FakeOpenAI) -> FakeOpenAI:
    llm_server.reset()
    llm_server.set_responder(None)
    llm_server.configure(latency_ms=0, fault_rates={}, retry_after="0.05", timeout_hold_s=30)
    return llm_server


def test_default_reply_parses_into_the_pydantic_model(llm: FakeOpenAI) -> None:
    draft = complete(llm)

    assert draft.subject == "Quick idea for Example Corp"
    assert draft.body == f"{PERSONAL_LINE}\n\nHi Ada,\n\nWe help teams ship faster.\n\nBest,\nSam"
    stats = llm.stats()
    assert (stats.requests, stats.successes, stats.faults) == (1, 1, {})
    [record] = llm.request_log()
    assert record.body["response_format"]["type"] == "json_schema"
    assert record.body["response_format"]["json_schema"]["name"] == "EmailDraft"
    assert (record.retry_count, record.outcome) == (0, "ok")


def test_prompt_without_delimiters_gets_a_generic_valid_draft(llm: FakeOpenAI) -> None:
    draft = complete(llm, prompt="Write anything.")

    assert draft.subject == "Quick question"
    assert draft.body.startswith("Hi there,")


def test_429_is_retried_after_retry_after_then_succeeds(llm: FakeOpenAI) -> None:
    llm.configure(retry_after="0.6")  # above the client's own first backoff (at most 0.5 s)
    llm.script(["429"])

    started = time.monotonic()
    draft = complete(llm, max_retries=2)

    assert time.monotonic() - started >= 0.6
    assert draft.subject == "Quick idea for Example Corp"
    stats = llm.stats()
    assert (stats.requests, stats.successes, stats.faults) == (2, 1, {"429": 1})
    assert stats.retry_counts == {0: 1, 1: 1}


def test_400_is_not_retried(llm: FakeOpenAI) -> None:
    llm.script([Fault.BAD_REQUEST])

    with pytest.raises(openai.BadRequestError) as raised:
        complete(llm, max_retries=2)

    assert raised.value.status_code == 400
    assert raised.value.code == "invalid_value"
    assert llm.stats().requests == 1


@pytest.mark.parametrize("fault", ["malformed", "invalid"])
def test_bad_content_fails_parsing(llm: FakeOpenAI, fault: str) -> None:
    llm.script([fault])

    with pytest.raises(pydantic.ValidationError):
        complete(llm)

    assert llm.stats().faults == {fault: 1}


def test_latency_is_applied(llm: FakeOpenAI) -> None:
    llm.set_latency(250)

    started = time.monotonic()
    complete(llm)

    assert time.monotonic() - started >= 0.25


def test_timeout_is_cancelled_when_the_client_gives_up(llm: FakeOpenAI) -> None:
    llm.script(["timeout"])

    with pytest.raises(openai.APITimeoutError):
        complete(llm, timeout=0.3)

    deadline = time.monotonic() + 3
    while llm.stats().in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = llm.stats()
    assert (stats.in_flight, stats.disconnects, stats.faults) == (0, 1, {"timeout": 1})


def test_connection_drop_is_a_connection_error_and_retryable(llm: FakeOpenAI) -> None:
    llm.script(["connection_drop"])

    with pytest.raises(openai.APIConnectionError):
        complete(llm)
    llm.script(["connection_drop"])
    draft = complete(llm, max_retries=1)

    assert draft.subject == "Quick idea for Example Corp"
    assert llm.stats().faults == {"connection_drop": 2}


def test_fault_rates_are_reproducible_with_a_seed(llm: FakeOpenAI) -> None:
    def outcomes() -> list[str]:
        llm.reset()
        llm.configure(fault_rates={"500": 0.5}, seed=11)
        for _ in range(12):
            with contextlib.suppress(openai.InternalServerError):
                complete(llm)
        return [record.outcome for record in llm.request_log()]

    first = outcomes()

    assert first == outcomes()
    assert {"ok", "500"} == set(first)


def test_custom_responder_scripts_the_content(llm: FakeOpenAI) -> None:
    replies: list[Any] = [
        Fault.RATE_LIMIT,
        {"subject": "Hi {{firstName}}", "body": "See evil.test"},
    ]
    llm.set_responder(lambda request: replies.pop(0))

    draft = complete(llm, max_retries=1)

    assert draft == EmailDraft(subject="Hi {{firstName}}", body="See evil.test")
    assert llm.stats().faults == {"429": 1}


def test_process_mode_is_driven_over_the_control_endpoint() -> None:
    with FakeOpenAI(process=True, error_retry_after="0.01") as server:
        server.script(["503"])

        draft = complete(server, max_retries=1)

        assert draft.subject == "Quick idea for Example Corp"
        stats = server.stats()
        assert (stats.requests, stats.faults, stats.retry_counts) == (2, {"503": 1}, {0: 1, 1: 1})
        assert [record.outcome for record in server.request_log()] == ["503", "ok"]


# -- SMTP ------------------------------------------------------------------------------------


def email(to: str, subject: str = "Quick idea") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "sam@sender.test", to, subject
    message.set_content("Hi,\n\nA short note.\n")
    return message.as_bytes(policy=SMTP_POLICY)


def connect(server: LoopbackSMTP) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname="localhost", timeout=5)


def test_smtplib_delivers_and_the_message_is_recorded(smtp: LoopbackSMTP) -> None:
    with connect(smtp) as client:
        refused = client.sendmail("sam@sender.test", ["ada@lead.test", "bo@lead.test"], email("x"))

    assert refused == {}
    [message] = smtp.wait_for(1)
    assert message.mail_from == "sam@sender.test"
    assert message.rcpt_tos == ("ada@lead.test", "bo@lead.test")
    assert message.message["Subject"] == "Quick idea"
    assert message.message.get_content() == "Hi,\n\nA short note.\n"
    assert not message.dropped
    assert (smtp.attempts("ADA@lead.test"), smtp.deliveries("ada@lead.test")) == (1, 1)


def test_550_recipient_is_refused_and_the_others_still_deliver(smtp: LoopbackSMTP) -> None:
    smtp.reject_rcpt("gone@lead.test", "550 5.1.1 User unknown")

    with connect(smtp) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
            client.sendmail("sam@sender.test", ["gone@lead.test"], email("gone@lead.test"))
        client.rset()
        client.sendmail("sam@sender.test", ["ada@lead.test"], email("ada@lead.test"))
        mixed = client.sendmail("sam@sender.test", ["gone@lead.test", "bo@lead.test"], email("x"))

    assert raised.value.recipients == {"gone@lead.test": (550, b"5.1.1 User unknown")}
    assert mixed == {"gone@lead.test": (550, b"5.1.1 User unknown")}
    assert [m.rcpt_tos for m in smtp.wait_for(2)] == [("ada@lead.test",), ("bo@lead.test",)]
    assert (smtp.attempts("gone@lead.test"), smtp.deliveries("gone@lead.test")) == (2, 0)


def test_temporary_rejections_are_reported(smtp: LoopbackSMTP) -> None:
    smtp.reject_rcpt("busy@lead.test", "450 4.2.1 Mailbox busy", times=1)
    smtp.reject_data("later@lead.test", "451 4.3.0 Try again later")

    with connect(smtp) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as rcpt:
            client.sendmail("sam@sender.test", ["busy@lead.test"], email("busy@lead.test"))
        client.rset()
        client.sendmail("sam@sender.test", ["busy@lead.test"], email("busy@lead.test"))
        with pytest.raises(smtplib.SMTPDataError) as data:
            client.sendmail("sam@sender.test", ["later@lead.test"], email("later@lead.test"))

    assert rcpt.value.recipients["busy@lead.test"][0] == 450
    assert (data.value.smtp_code, data.value.smtp_error) == (451, b"4.3.0 Try again later")
    assert [m.rcpt_tos for m in smtp.messages] == [("busy@lead.test",)]
    assert smtp.attempts("busy@lead.test") == 2
    assert smtp.rejections("later@lead.test") == 1


def test_accept_then_drop_disconnects_after_the_server_took_the_message(smtp: LoopbackSMTP) -> None:
    smtp.accept_then_drop("flaky@lead.test")

    with connect(smtp) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("sam@sender.test", ["flaky@lead.test"], email("flaky@lead.test"))

    [message] = smtp.wait_for(1)
    assert message.dropped
    assert message.rcpt_tos == ("flaky@lead.test",)
    assert smtp.deliveries("flaky@lead.test") == 1


def test_internationalised_addresses_with_smtputf8(smtp: LoopbackSMTP) -> None:
    with connect(smtp) as client:
        client.sendmail("sam@sender.test", ["jürgen@bücher.test"], email("x"), ["SMTPUTF8"])

    [message] = smtp.wait_for(1)
    assert (message.rcpt_tos, message.smtp_utf8) == (("jürgen@bücher.test",), True)


def test_auth_is_required_and_checked_over_starttls() -> None:
    with LoopbackSMTP(auth=("mailer", "s3cret"), starttls=True) as server:
        assert server.cert_path is not None
        with connect(server) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
                client.sendmail("sam@sender.test", ["ada@lead.test"], email("x"))
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("mailer", "wrong")
            client.starttls(context=ssl.create_default_context(cafile=str(server.cert_path)))
            client.login("mailer", "s3cret")
            client.sendmail("sam@sender.test", ["ada@lead.test"], email("x"))

        assert unauthenticated.value.smtp_code == 530
        [message] = server.wait_for(1)
        assert message.auth_login == "mailer"
