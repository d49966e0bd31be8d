"""A reply's new text: quoted thread, quote headers (EN/FR/DE/ES), signatures and HTML quotes
stripped; never in a dump of its event; bounded."""

import email
import email.policy
import time
from email.message import EmailMessage

import pytest

from core.engagement.inbound import classify_message
from core.replies.reply_text import NEW_TEXT_CHARS, new_text, reply_content, without_addresses
from tests.support.reply_corpus import load_corpus

CORPUS = load_corpus()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Sounds good, call me Thursday.\n\nOn Tue, 24 Nov 2026 at 09:00, Sam <s@x.example>"
            " wrote:\n> Are you interested?\n",
            "Sounds good, call me Thursday.",
        ),
        (
            # Gmail wraps a long attribution line: "wrote:" alone on the next line.
            "Yes please.\n\nOn Tue, 24 Nov 2026 at 09:00, Sam Seller from Seller Co\n"
            "<sam@seller.example> wrote:\n> Are you interested?\n",
            "Yes please.",
        ),
        (
            "Oui, volontiers.\n\nLe mar. 24 nov. 2026 à 09:00, Sam <s@x.example> a écrit :\n"
            "> Intéressé ?\n",
            "Oui, volontiers.",
        ),
        (
            "Gerne.\n\nAm Di., 24. Nov. 2026 um 09:00 Uhr schrieb Sam <s@x.example>:\n"
            "> Interesse?\n",
            "Gerne.",
        ),
        (
            # mail-parser-reply 1.36 misses Gmail's Spanish header; ours cuts it.
            "Me interesa.\n\nEl mar, 24 nov 2026 a las 9:00, Sam (<s@x.example>) escribió:\n"
            "> ¿Le interesa?\n",
            "Me interesa.",
        ),
        (
            "Kein Bedarf.\n\nVon: Sam <s@x.example>\nGesendet: Dienstag, 24. November 2026\n"
            "An: Lena <l@x.example>\nBetreff: Idee\n\nInteresse?\n",
            "Kein Bedarf.",
        ),
        (
            "No thanks.\n\n-----Original Message-----\nFrom: Sam\nSent: Tuesday\n\nInterested?\n",
            "No thanks.",
        ),
        ("Sure.\n\nBest regards,\nAda\nCTO, Lead Co\n", "Sure."),
        ("Thanks!\n\nSent from my iPhone\n", "Thanks!"),
        # Quoted lines with no header above them are dropped too.
        ("> you said you were interested\nWe are not.", "We are not."),
        # A bare forward: everything is quoted, nothing is new.
        ("On Tue, 24 Nov 2026, Sam <s@x.example> wrote:\n> Interested?\n", ""),
    ],
)
def test_new_text_keeps_only_the_senders_own_words(body, expected):
    assert new_text(body) == expected


def test_new_text_is_bounded_however_long_the_body():
    text = new_text("word " * 50_000)
    assert 0 < len(text) <= NEW_TEXT_CHARS


@pytest.mark.parametrize("line", ["On " * 6000 + "wrote:", "Le " * 6000, "Am " * 6000])
def test_a_hostile_line_costs_milliseconds_not_seconds(line):
    # Unsplit, mail-parser-reply's header patterns took 4 s on the first of these.
    started = time.perf_counter()
    new_text(line)
    assert time.perf_counter() - started < 0.5


def test_a_long_paragraph_split_for_the_parser_comes_back_whole():
    # 390 characters, then "Thanks," where the split for the parser falls: not a signature.
    paragraph = "x" * 389 + " Thanks, we will call you on Monday. " + "y" * 500
    assert new_text(f"{paragraph}\n\nBest regards,\nAda") == paragraph.strip()


def _message(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_html_reply_loses_its_blockquote_and_gmail_quote():
    raw = (
        b"From: a@b.example\nSubject: Re: x\nContent-Type: text/html; charset=utf-8\n\n"
        b"<div>Yes, let&#39;s talk.<br>Tomorrow?</div>"
        b"<div class='gmail_quote'>On Monday Sam wrote:<blockquote>interested?</blockquote></div>"
        b"<style>p {color: red}</style>"
    )
    content = reply_content(_message(raw), automatic=False)
    assert content.text == "Yes, let's talk.\nTomorrow?"
    assert content.subject == "Re: x"


def test_plain_part_is_preferred_to_html():
    message = EmailMessage()
    message["From"] = "a@b.example"
    message.set_content("Plain words.")
    message.add_alternative("<p>HTML words.</p>", subtype="html")
    assert reply_content(message, automatic=True).text == "Plain words."


def test_a_body_that_cannot_be_decoded_leaves_the_text_empty():
    raw = b"From: a@b.example\nContent-Type: text/plain; charset=no-such-charset\n\nHello\n"
    assert reply_content(_message(raw), automatic=False).text == ""


@pytest.mark.parametrize("reply", [r for r in CORPUS if r.not_in_text], ids=lambda r: r.file)
def test_corpus_quoted_history_never_reaches_the_event(reply):
    event = classify_message(reply.raw, source="corpus", line=1)
    assert event is not None and event.reply is not None
    assert reply.match in event.reply.text
    assert reply.not_in_text not in event.reply.text
    # The text travels with the event but is never dumped or shown.
    assert reply.match not in event.model_dump_json()
    assert reply.match not in repr(event)


def test_addresses_are_written_as_a_placeholder():
    assert without_addresses("ask maria@x.example now") == "ask <address> now"
    assert without_addresses("no address here") == "no address here"
