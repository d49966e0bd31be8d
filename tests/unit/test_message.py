"""Outgoing messages: the right headers, and no way for lead or LLM text to add one."""

import base64
import copy
import dataclasses
import email.policy
import email.utils
import pickle
import random
import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from email_validator import EmailNotValidError, validate_email

from core.delivery.headers import MessageError, clean_header_text
from core.delivery.message import (
    OutgoingEmail,
    _plain_address,
    build_message,
    message_id_for,
    thread_subject,
)

FROM = "bob@sender.example.com"
LEAD = "ann@acme.example.org"
REPLY_TO = "replies@sender.example.com"
TOKEN = "MGYzYzlhYjE." + "A" * 43
UNSUB_URL = f"https://app.example.com/unsubscribe/{TOKEN}"
UNSUB_MAILTO = f"mailto:unsubscribe@sender.example.com?subject=unsubscribe%20{TOKEN}"
DATE = datetime(2024, 5, 6, 9, 30, tzinfo=timezone(timedelta(hours=2)))
FIRST_ID = message_id_for("0f3c9ab1", FROM)
SECOND_ID = message_id_for("7d21e004", FROM)
COMMON_HEADERS = {
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
}
PLAIN_HEADERS = COMMON_HEADERS | {"Content-Transfer-Encoding"}
THREAD_HEADERS = {"In-Reply-To", "References"}


def _email(**changes) -> OutgoingEmail:
    base = OutgoingEmail(
        send_id="0f3c9ab1",
        from_email=FROM,
        from_name="Bob Sender",
        reply_to=REPLY_TO,
        to_email=LEAD,
        to_name="Ann Lead",
        subject="Quick idea for Acme",
        text_body="Hi Ann,\n\nSaw the launch.\nNice!\n\nBob",
        html=False,
        date=DATE,
        message_id=FIRST_ID,
        in_reply_to=None,
        references=(),
        unsubscribe_url=UNSUB_URL,
        unsubscribe_mailto=UNSUB_MAILTO,
    )
    return dataclasses.replace(base, **changes)


def _parse(message: EmailMessage) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(message.as_bytes())


def _raw_header_lines(message: EmailMessage) -> list[str]:
    raw = message.as_bytes().decode("ascii")
    return raw.split("\r\n\r\n", 1)[0].split("\r\n")


def _raw_headers(message: EmailMessage) -> dict[str, str]:
    """Each header's value as sent, unfolded (RFC 5322 2.2.3: drop the CRLF before WSP)."""
    unfolded = "\r\n".join(_raw_header_lines(message)).replace("\r\n ", " ")
    names_and_values = (line.split(": ", 1) for line in unfolded.split("\r\n"))
    return {name.lower(): value for name, value in names_and_values}


def _followup(**changes) -> OutgoingEmail:
    follow_up = {
        "send_id": "7d21e004",
        "subject": thread_subject("Quick idea for Acme"),
        "message_id": SECOND_ID,
        "in_reply_to": FIRST_ID,
        "references": (FIRST_ID,),
    }
    return _email(**{**follow_up, **changes})


def test_first_email_has_exactly_the_expected_headers():
    parsed = _parse(build_message(_email()))

    assert Counter(parsed.keys()) == Counter(PLAIN_HEADERS)
    assert parsed["From"].addresses[0].display_name == "Bob Sender"
    assert parsed["From"].addresses[0].addr_spec == FROM
    assert str(parsed["To"]) == f"Ann Lead <{LEAD}>"
    assert str(parsed["Reply-To"]) == REPLY_TO
    assert parsed["Subject"] == "Quick idea for Acme"
    assert parsed["Date"].datetime == DATE
    assert parsed["Message-ID"] == "<0f3c9ab1@sender.example.com>"
    assert parsed["List-Unsubscribe"] == f"<{UNSUB_URL}>, <{UNSUB_MAILTO}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "text/plain"
    assert (
        parsed.get_content().replace("\r\n", "\n") == "Hi Ann,\n\nSaw the launch.\nNice!\n\nBob\n"
    )


def test_follow_up_threads_on_the_first_email():
    parsed = _parse(build_message(_followup(references=("<root@sender.example.com>", FIRST_ID))))

    assert Counter(parsed.keys()) == Counter(PLAIN_HEADERS | THREAD_HEADERS)
    assert parsed["Subject"] == "Re: Quick idea for Acme"
    assert parsed["Message-ID"] == SECOND_ID
    assert parsed["In-Reply-To"] == FIRST_ID
    assert parsed["References"] == f"<root@sender.example.com> {FIRST_ID}"


def test_follow_up_can_answer_another_mailers_message_id():
    gmail_id = "<CAF=x+Y_z-1.AbC@mail.gmail.com>"
    parsed = _parse(build_message(_followup(in_reply_to=gmail_id, references=(gmail_id,))))

    assert parsed["In-Reply-To"] == gmail_id
    assert parsed["References"] == gmail_id


def test_follow_up_without_a_chain_references_its_parent():
    parsed = _parse(build_message(_followup(references=())))

    assert parsed["References"] == FIRST_ID


def test_references_are_ignored_without_in_reply_to():
    parsed = _parse(build_message(_email(references=(FIRST_ID,))))

    assert Counter(parsed.keys()) == Counter(PLAIN_HEADERS)


def test_optional_reply_to_and_display_names_can_be_left_out():
    parsed = _parse(build_message(_email(reply_to=None, from_name=None, to_name=None)))

    assert Counter(parsed.keys()) == Counter(PLAIN_HEADERS - {"Reply-To"})
    assert str(parsed["From"]) == FROM
    assert str(parsed["To"]) == LEAD


def test_html_alternative_follows_the_text():
    body = "Hi <b>Ann</b> & co,\n\nLine one\nline two\n\n\n\nBob"
    parsed = _parse(build_message(_email(html=True, text_body=body)))

    assert Counter(parsed.keys()) == Counter(COMMON_HEADERS)
    assert parsed.get_content_type() == "multipart/alternative"
    plain, rich = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert rich.get_content_type() == "text/html"
    assert "MIME-Version" not in plain
    assert "MIME-Version" not in rich
    assert plain.get_content().replace("\r\n", "\n") == body + "\n"
    html = rich.get_content()
    assert "<p>Hi &lt;b&gt;Ann&lt;/b&gt; &amp; co,</p>" in html
    assert "<p>Line one<br>\r\nline two</p>" in html
    assert "<p>Bob</p>" in html
    assert html.count("<p>") == 3


def test_no_html_part_unless_asked():
    parsed = _parse(build_message(_email(html=False)))

    assert not parsed.is_multipart()
    assert "<p>" not in parsed.as_string()


def test_non_ascii_headers_and_body_are_encoded():
    message = build_message(
        _email(from_name="Zoë Sender", to_name="Ånn Lëad", subject="Idée 日本語", text_body="Grüße")
    )
    parsed = _parse(message)

    message.as_bytes().decode("ascii")  # every header and part is 7-bit
    assert parsed["Subject"] == "Idée 日本語"
    assert parsed["To"].addresses[0].display_name == "Ånn Lëad"
    assert parsed["From"].addresses[0].display_name == "Zoë Sender"
    assert parsed.get_content().strip() == "Grüße"


def test_long_display_names_are_cut_to_stay_quoted():
    name = "Evil <evil@evil.example>, victim " + "padding " * 12
    message = build_message(_email(to_name=name, from_name='"' * 100))
    parsed = _parse(message)

    shown = parsed["To"].addresses[0].display_name
    assert name.startswith(shown)
    assert len(shown) == 75  # 77 with its quotes
    assert parsed["From"].addresses[0].display_name == '"' * 37
    assert [a.addr_spec for a in parsed["To"].addresses] == [LEAD]


def test_internationalised_domain_is_sent_as_punycode():
    parsed = _parse(build_message(_email(to_email="ann@münchen.example")))

    assert parsed["To"].addresses[0].addr_spec == "ann@xn--mnchen-3ya.example"


def test_long_tokens_fold_without_encoded_words():
    # The stdlib would write these as =?utf-8?q?...?=, which breaks unsubscribing and threading.
    long_sender = "bob@" + "a-very-long-sending-subdomain." * 3 + "example.com"
    long_url = "https://unsubscribe." + "long-subdomain." * 4 + f"example.com/u/{TOKEN}"
    first = message_id_for("0f3c9ab1", long_sender)
    second = message_id_for("7d21e004", long_sender)
    message = build_message(
        _followup(
            from_email=long_sender,
            message_id=second,
            in_reply_to=first,
            references=(first, first),
            unsubscribe_url=long_url,
        )
    )
    raw = _raw_headers(message)

    # Unfolded wire text, not parsed values: the stdlib parser would decode encoded words.
    assert raw["list-unsubscribe"] == f"<{long_url}>, <{UNSUB_MAILTO}>"
    assert raw["in-reply-to"] == first
    assert raw["references"] == f"{first} {first}"
    assert raw["message-id"] == second
    assert max(len(line) for line in _raw_header_lines(message)) <= 998


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


INJECTIONS = [
    pytest.param("Hi\r\nBcc: evil@evil.example", id="crlf"),
    pytest.param("Hi\nBcc: evil@evil.example", id="lf"),
    pytest.param("Hi\rBcc: evil@evil.example", id="cr"),
    pytest.param("Hi\r\n\r\nBcc: evil@evil.example", id="blank-line"),
    pytest.param("Hi\r\n Bcc: evil@evil.example", id="continuation"),
    pytest.param("Hi\x00Bcc: evil@evil.example", id="nul"),
    pytest.param("Hi\u2028Bcc: evil@evil.example\u2029Cc: x@evil.example", id="u2028-u2029"),
    pytest.param("Hi\x85Bcc: evil@evil.example", id="nel"),
    pytest.param("Hi\x0bBcc\x0c: evil@evil.example\x1b[0m\x7f", id="vt-ff-esc-del"),
    pytest.param("hello =?UTF-8?Q?=0D=0ABcc:_evil@evil.example?=", id="ew-q-crlf"),
    pytest.param("=?UTF-8?Q?=0A?=Bcc: evil@evil.example", id="ew-q-lf"),
    pytest.param(_b_word("\r\nBcc: evil@evil.example"), id="ew-b-crlf"),
    pytest.param(f'"{_b_word("x")}" <evil@evil.example>', id="ew-in-quotes"),
    pytest.param("Subject: x\nBcc: evil@evil.example\n\nFrom: evil@evil.example", id="headers"),
    pytest.param("Evil <evil@evil.example>, victim", id="comma-angle"),
    # Long enough that the stdlib would fold the quoted name and drop its quotes (gh-80222).
    pytest.param("Evil <evil@evil.example>, victim " + "padding " * 12, id="long-comma-angle"),
    pytest.param('"' * 100 + " <evil@evil.example>, " + "\\" * 50, id="long-quotes"),
    pytest.param('"Evil" <evil@evil.example>, "Victim" <victim@evil.example>', id="two-quoted"),
    pytest.param('a\\" <evil@evil.example>, "b', id="backslash-quote"),
    pytest.param("evil@evil.example;victim@evil.example", id="semicolon"),
    pytest.param("Zoë Ångström 日本語 \u202eevil", id="non-ascii"),
    pytest.param("word " * 400, id="long-words"),
    pytest.param("x" * 2000, id="long-token"),
    pytest.param("é" * 500 + " Bcc: evil@evil.example", id="long-non-ascii"),
]


@pytest.mark.parametrize("html", [False, True], ids=["plain", "html"])
@pytest.mark.parametrize("field", ["subject", "to_name", "from_name", "text_body"])
@pytest.mark.parametrize("value", INJECTIONS)
def test_untrusted_text_cannot_add_headers_or_recipients(field, value, html):
    baseline = _parse(build_message(_email(html=html)))
    message = build_message(_email(html=html, **{field: value}))
    parsed = _parse(message)

    assert Counter(parsed.keys()) == Counter(baseline.keys())
    assert "Bcc" not in parsed
    assert "Cc" not in parsed
    assert [addr for _, addr in email.utils.getaddresses(parsed.get_all("To"))] == [LEAD]
    assert [a.addr_spec for a in parsed["To"].addresses] == [LEAD]
    assert [a.addr_spec for a in parsed["From"].addresses] == [FROM]
    assert not parsed.defects
    names = {name.lower() for name in baseline}
    for line in _raw_header_lines(message):
        assert line[0] in " \t" or line.split(":", 1)[0].lower() in names, line
        assert len(line) <= 998
    if field == "subject":
        assert parsed["Subject"] == clean_header_text(value)
    if field in ("to_name", "from_name"):
        header = "To" if field == "to_name" else "From"
        # The stdlib parser puts a space between adjacent encoded words of a name, so compare
        # without whitespace; overlong names are cut, so the name shown is a prefix.
        shown = "".join(parsed[header].addresses[0].display_name.split())
        assert shown
        assert "".join(clean_header_text(value).split()).startswith(shown)
    if field == "text_body":
        text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert all(char in "\n\t" or unicodedata.category(char) != "Cc" for char in text)


@pytest.mark.parametrize(
    "address",
    [
        "a@example.com, b@example.org",
        "a@example.com\r\nBcc: b@example.org",
        "a@example.com\nb@example.org",
        "Ann <ann@example.com>",
        '"a,b"@example.com',
        "a@example.com;b@example.org",
        "=?utf-8?q?x?=@example.com",
        "no-at-sign",
        "",
        "ñ@example.com",
    ],
)
def test_bad_lead_address_is_refused(address):
    with pytest.raises(MessageError, match=r"^Lead\.email: "):
        build_message(_email(to_email=address))


def test_bad_sender_addresses_are_refused():
    with pytest.raises(MessageError, match=r"^sendingRules\.fromEmail: "):
        build_message(_email(from_email="bob@example.com, eve@example.com"))
    with pytest.raises(MessageError, match=r"^sendingRules\.replyTo: "):
        build_message(_email(reply_to="r@example.com\r\nBcc: eve@example.com"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unsubscribe_url", "ftp://app.example.com/unsubscribe/x"),
        ("unsubscribe_url", "javascript:alert(1)"),
        ("unsubscribe_url", "https://app.example.com/unsubscribe/a b"),
        ("unsubscribe_url", "https://app.example.com/u/x>, <https://evil.example/"),
        ("unsubscribe_url", "https://app.example.com/u/x\r\nBcc: evil@evil.example"),
        ("unsubscribe_url", "https://app.example.com/u/\x00"),
        ("unsubscribe_url", "https://app.example.com/u/é"),
        ("unsubscribe_url", "https://app.example.com/" + "x" * 1000),
        ("unsubscribe_mailto", "https://app.example.com/unsubscribe/x"),
        ("unsubscribe_mailto", "mailto:u@example.com?subject=unsubscribe x"),
        ("unsubscribe_mailto", "mailto:u@example.com>"),
        ("message_id", "<a b@example.com>"),
        ("message_id", "no-brackets@example.com"),
        ("in_reply_to", "<x@example.com>\r\nBcc: evil@evil.example"),
        ("references", ("<x@example.com> <y@example.com>",)),
    ],
)
def test_bad_structured_values_are_refused(field, value):
    changes = {field: value}
    if field == "references":
        changes["in_reply_to"] = FIRST_ID
    with pytest.raises(MessageError, match=rf"^{field}: "):
        build_message(_email(**changes))


def test_local_http_unsubscribe_url_is_accepted():
    url = f"http://127.0.0.1:8080/unsubscribe/{TOKEN}"
    parsed = _parse(build_message(_email(unsubscribe_url=url)))

    assert parsed["List-Unsubscribe"] == f"<{url}>, <{UNSUB_MAILTO}>"


def test_naive_date_is_refused():
    with pytest.raises(MessageError, match=r"^date: "):
        build_message(_email(date=datetime(2024, 5, 6, 9, 30)))


def test_utc_date_is_kept():
    parsed = _parse(build_message(_email(date=datetime(2024, 5, 6, 7, 30, tzinfo=UTC))))

    assert parsed["Date"] == "Mon, 06 May 2024 07:30:00 +0000"


def test_body_line_endings_and_controls_are_normalised():
    body = "A\r\nB\rC\x85D\u2028E\u2029F\x00G\x1bH\tI"
    parsed = _parse(build_message(_email(text_body=body)))

    assert parsed.get_content().replace("\r\n", "\n") == "A\nB\nC\nD\nE\nFGH\tI\n"


def test_message_id_is_deterministic_and_sanitised():
    assert message_id_for("0f3c9ab1", FROM) == "<0f3c9ab1@sender.example.com>"
    assert message_id_for("0f3c9ab1", "Bob@Sender.Example.COM") == "<0f3c9ab1@sender.example.com>"
    assert message_id_for("a b>\r\n<c@d", FROM) == "<a-b----c-d@sender.example.com>"
    assert message_id_for("id.v1_x-y", FROM) == "<id.v1_x-y@sender.example.com>"
    with pytest.raises(MessageError, match=r"^EmailSend\.id: "):
        message_id_for("", FROM)
    with pytest.raises(MessageError, match=r"^sendingRules\.fromEmail: "):
        message_id_for("abc", "not an address")


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("Quick idea", "Re: Quick idea"),
        ("Re: Quick idea", "Re: Quick idea"),
        ("RE:Quick idea", "Re: Quick idea"),
        ("re : re: Quick idea", "Re: Quick idea"),
        ("Quick idea re: pricing", "Re: Quick idea re: pricing"),
        ("Regarding pricing", "Re: Regarding pricing"),
        ("  Quick\r\nidea ", "Re: Quick idea"),
        ("Re:", "Re:"),
        ("", "Re:"),
    ],
)
def test_thread_subject(root, expected):
    assert thread_subject(root) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\r\nb", "a b"),
        ("\t a  \x00 b \u2028c\x85d\u2029e\x7ff\x1b", "a b c d e f"),
        ("=?utf-8?q?x?=", "= ?utf-8?q?x?="),
        ("==??", "== ??"),
        ("=\n?", "= ?"),
        ("Zoë", "Zoë"),
        ("", ""),
    ],
)
def test_clean_header_text(value, expected):
    assert clean_header_text(value) == expected


# -- the fast paths: prepared headers, plain addresses, body encodings --------------------------


def _built_headers(message: EmailMessage) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in message.items()]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="plain"),
        pytest.param({"html": True}, id="html"),
        pytest.param({"to_name": "Ånn Lëad", "subject": "Idée rapide pour Acmé"}, id="non-ascii"),
        pytest.param({"to_name": 'Ann "The Lead" <x@y>, O.K.'}, id="specials"),
        pytest.param({"to_name": "Zoë <evil@evil.example>, victim"}, id="non-ascii-specials"),
        pytest.param({"subject": "Quick idea " * 20}, id="long-subject"),
        pytest.param({"subject": "日本語の件名" * 10}, id="cjk-subject"),
        pytest.param({"subject": ""}, id="empty-subject"),
        pytest.param({"from_name": None, "to_name": None, "reply_to": None}, id="bare-addresses"),
    ],
)
def test_headers_read_back_as_they_were_built(changes):
    message = build_message(_email(**changes))
    parsed = _parse(message)

    assert _built_headers(message) == _built_headers(parsed)
    assert not parsed.defects
    message.as_bytes().decode("ascii")


def test_lines_with_encoded_words_keep_to_76_characters():
    # RFC 2047 2; receivers may refuse to decode longer lines.
    message = build_message(
        _email(to_name="Ånn Lëad " * 10, from_name="日本語" * 20, subject="Idée rapide " * 30)
    )

    lines = [line for line in _raw_header_lines(message) if "=?" in line]
    assert len(lines) > 6
    assert max(len(line) for line in lines) <= 76


@pytest.mark.parametrize("policy", [email.policy.SMTPUTF8, email.policy.default.clone(utf8=True)])
@pytest.mark.parametrize("field", ["subject", "to_name", "from_name"])
@pytest.mark.parametrize("value", [*INJECTIONS, "Zoë Sender", "日本語の名前" * 20])
def test_utf8_policies_write_text_as_is_and_still_add_no_header(policy, field, value):
    # What the SMTPUTF8 transport (a non-ASCII recipient domain) and the console transport do.
    message = build_message(_email(**{field: value}))
    raw = message.as_bytes(policy=policy)
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)

    assert Counter(parsed.keys()) == Counter(message.keys())
    assert [a.addr_spec for a in parsed["To"].addresses] == [LEAD]
    assert [a.addr_spec for a in parsed["From"].addresses] == [FROM]
    assert not parsed.defects
    header = {"subject": "Subject", "to_name": "To", "from_name": "From"}[field]
    shown = str(message[header])
    assert "".join(str(parsed[header]).split()) == "".join(shown.split())


def test_utf8_policies_write_names_and_subject_as_utf8():
    message = build_message(_email(to_name="Ånn Lëad", from_name="Zoë", subject="Idée rapide"))
    raw = message.as_bytes(policy=email.policy.SMTPUTF8).decode()

    assert f"\r\nFrom: Zoë <{FROM}>\r\n" in "\r\n" + raw
    assert f"\r\nTo: Ånn Lëad <{LEAD}>\r\n" in raw
    assert "\r\nSubject: Idée rapide\r\n" in raw


def test_built_message_behaves_like_a_parsed_one():
    message = build_message(_email(html=True, to_name="Ånn Lëad"))

    assert [a.addr_spec for a in message["To"].addresses] == [LEAD]
    assert message["To"].addresses[0].display_name == "Ånn Lëad"
    assert message["Date"].datetime == DATE
    assert message["Content-Type"].content_type == "multipart/alternative"
    body = message.get_body(("plain",)).get_content()
    assert body.replace("\r\n", "\n") == "Hi Ann,\n\nSaw the launch.\nNice!\n\nBob\n"
    assert copy.deepcopy(message).as_bytes() == message.as_bytes()
    assert pickle.loads(pickle.dumps(message)).as_bytes() == message.as_bytes()


def test_built_message_still_refuses_a_second_unique_header():
    message = build_message(_email())
    message["X-Campaign"] = "c1"

    with pytest.raises(ValueError, match="Subject"):
        message["Subject"] = "again"
    assert _parse(message)["X-Campaign"] == "c1"


def test_sender_headers_follow_each_sender():
    # The From and Reply-To headers are cached per sender; a cache must not mix them up.
    first = _parse(build_message(_email(from_name="Bob Sender")))
    second = _parse(build_message(_email(from_name="Bea Sender", reply_to="b@sender.example.com")))
    third = _parse(build_message(_email(from_name="Bob Sender", from_email="b@sender.example.com")))

    assert str(first["From"]) == f"Bob Sender <{FROM}>"
    assert str(first["Reply-To"]) == REPLY_TO
    assert str(second["From"]) == f"Bea Sender <{FROM}>"
    assert str(second["Reply-To"]) == "b@sender.example.com"
    assert str(third["From"]) == "Bob Sender <b@sender.example.com>"


@pytest.mark.parametrize(
    ("body", "cte"),
    [
        pytest.param("Hi Ann,\n\nshort lines only.\n", "7bit", id="ascii"),
        pytest.param("Hi Ann, " + "a rather long line " * 10, "quoted-printable", id="long-line"),
        pytest.param("Grüße aus München,\nBob", "quoted-printable", id="latin"),
        pytest.param("日本語の本文です。\n" * 20, "base64", id="cjk"),
        pytest.param("trailing space \nand tab\t\n.\nFrom here\n", "7bit", id="edge-lines"),
        pytest.param("=?utf-8?q?x?= 100% = sign " * 5, "quoted-printable", id="equals"),
    ],
)
def test_body_is_encoded_as_the_email_package_would(body, cte):
    reference = EmailMessage(policy=email.policy.SMTP.clone(cte_type="7bit"))
    reference.set_content(body)
    assert reference["Content-Transfer-Encoding"] == cte
    expected = body if body.endswith("\n") else body + "\n"
    for html in (False, True):
        parsed = _parse(build_message(_email(text_body=body, html=html)))
        plain = parsed.get_body(("plain",))

        assert plain["Content-Transfer-Encoding"] == cte
        assert plain.get_content().replace("\r\n", "\n") == expected


def test_multipart_boundary_never_appears_in_a_part(monkeypatch):
    taken = "===============0000000000000000001=="
    draws = iter([1, 2])
    monkeypatch.setattr(random, "randrange", lambda stop: next(draws))
    body = f"Hi\n--{taken}\nContent-Type: text/html\n\n<script>\n--{taken}--\n"
    parsed = _parse(build_message(_email(html=True, text_body=body)))

    assert parsed.get_boundary() == "===============0000000000000000002=="
    plain, rich = parsed.iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == body
    assert rich.get_content_type() == "text/html"


def test_every_control_character_is_removed_from_the_body():
    controls = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]
    body = "A" + "".join(controls) + "B\u200b\u00a0C"
    parsed = _parse(build_message(_email(text_body=body)))

    # Of the controls only the tab and the line breaks \n, \r and NEL (as \n) are left.
    assert parsed.get_content().replace("\r\n", "\n") == "A\t\n\n\nB\u200b\u00a0C\n"


@pytest.mark.parametrize("field", ["subject", "to_name", "from_name", "text_body"])
def test_lone_surrogate_is_refused_naming_the_field(field):
    # A JSON "\ud800" escape decodes to one; it has no UTF-8 form.
    with pytest.raises(MessageError, match=rf"^{field}: "):
        build_message(_email(**{field: "Hi \ud800 there"}))


ADDRESSES = [
    LEAD,
    "Ann.Lead@Acme.Example.ORG",
    "ann@ACME.example.org",
    "INFO@acme.example.org",
    "Postmaster@acme.example.org",
    "o'brien+tag@mail.acme.co.uk",
    "a.b.c_d-e@x1.example.com",
    "!#$%&'*+/?=^_`{|}~-@example.com",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@example",
    "a@example.c0",
    "a@example.123",
    "a@-example.com",
    "a@example-.com",
    "a@ex--ample.com",
    "a@ab--cd.example.com",
    "a@xn--mnchen-3ya.example",
    "a@xn--zz.example",
    "a@foo.local",
    "a@foo.test",
    "a@FOO.Invalid",
    "a@foo.onion",
    "a@1.2.3.4.in-addr.arpa",
    "a@localhost",
    "a@" + "x" * 63 + ".com",
    "a@" + "x" * 64 + ".com",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + ".".join(["x" * 60] * 4) + ".com",
    "a" * 60 + "@" + ".".join(["x" * 60] * 3) + ".com",
    "a@example.com.",
    " a@example.com",
    "a@example.com\n",
    "a b@example.com",
    '"a"@example.com',
    "a@[192.0.2.1]",
    "ann@münchen.example",
    "ann@ｅｘａｍｐｌｅ.com",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_plain_address_shortcut_agrees_with_email_validator(address):
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        expected = result.ascii_email
    except EmailNotValidError:
        expected = None

    shortcut = _plain_address(address)
    assert shortcut is None or shortcut == expected
    if expected is None:
        with pytest.raises(MessageError, match=r"^Lead\.email: "):
            build_message(_email(to_email=address))
    else:
        parsed = _parse(build_message(_email(to_email=address)))
        assert [a.addr_spec for a in parsed["To"].addresses] == [expected]


def test_plain_address_shortcut_takes_the_usual_addresses():
    assert _plain_address(LEAD) == LEAD
    assert _plain_address("first.last+tag@Mail.Acme-Corp.co.uk") == (
        "first.last+tag@mail.acme-corp.co.uk"
    )


TOP_LABELS = ["com", "ORG", "io", "c0", "9", "test", "local", "arpa", "xn--p1ai", "a-b"]


def test_plain_address_shortcut_agrees_with_email_validator_on_random_addresses():
    rng = random.Random(20240506)

    def text(alphabet: str, longest: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, longest)))

    taken = 0
    for _ in range(3000):
        local = text("abcXY019._+-'!=?", 8)
        labels = [text("abcXY019-", 6) for _ in range(rng.randint(1, 3))]
        top = rng.choice(TOP_LABELS)
        address = f"{local}@{'.'.join([*labels, top])}"
        shortcut = _plain_address(address)
        if shortcut is None:
            continue
        taken += 1
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        assert shortcut == result.ascii_email, address
    assert taken > 300
