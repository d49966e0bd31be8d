"""The rules-only classifier (no API key): the whole corpus, return dates in several formats and
languages, and what the rules leave for a person."""

from datetime import date

import pytest

from core.engagement.inbound import classify_message
from core.replies.intent import ClassificationMethod, Intent
from core.replies.reply_text import ReplyContent
from core.replies.rules import classify_by_rules, find_return_date
from tests.support.reply_corpus import RECEIVED, load_corpus

CORPUS = load_corpus()


def test_the_corpus_covers_every_language_and_kind():
    assert len(CORPUS) >= 30
    languages = {reply.file[3:5] for reply in CORPUS}
    assert languages == {"en", "fr", "de", "es"}
    intents = {reply.llm["intent"] for reply in CORPUS}
    assert intents == {intent.value for intent in Intent} - {"other"}
    assert sum(1 for r in CORPUS if r.rules.get("return_date")) >= 8
    assert sum(1 for r in CORPUS if r.not_in_text) >= 10


@pytest.mark.parametrize("reply", CORPUS, ids=lambda r: r.file)
def test_corpus_through_the_rules(reply):
    event = classify_message(reply.raw, source="corpus", line=1)
    assert event is not None
    found = classify_by_rules(event.reply, received=event.occurred_at.date())
    assert found.method is ClassificationMethod.rules
    assert found.intent.intent.value == reply.rules["intent"]
    assert found.intent.return_date == reply.rules.get("return_date")
    assert found.model is None and found.prompt_tokens == 0
    assert "@" not in found.intent.summary


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("back on Monday", "en", date(2026, 12, 7)),
        ("until December 9th", "en", date(2026, 12, 9)),
        ("back on 12/10/2026", "en", date(2026, 12, 10)),  # month first in English
        ("until 2026-12-11", "en", date(2026, 12, 11)),
        ("de retour le 07/12/2026", "fr", date(2026, 12, 7)),  # day first elsewhere
        ("jusqu'au 3 janvier 2027", "fr", date(2027, 1, 3)),
        ("bis zum 3. Januar", "de", date(2027, 1, 3)),  # no year: the next one
        ("ab dem 08.12.2026 wieder da", "de", date(2026, 12, 8)),
        ("hasta el 15 de diciembre", "es", date(2026, 12, 15)),
        # Sent during the absence: its start is behind the reply, its end the return date.
        ("from 1 December to 10 December", "en", date(2026, 12, 10)),
        ("I was away on 1 November 2026", "en", None),  # before the reply: not a return
        ("back in 2029-01-01", "en", None),  # more than a year out
        ("no date here at all", "en", None),
    ],
)
def test_return_dates_in_several_formats(text, language, expected):
    received = date(2026, 12, 2)  # a Wednesday
    assert find_return_date(text, received=received, language=language) == expected


def test_a_person_asking_out_is_unsubscribe_even_while_away():
    reply = ReplyContent(text="I'm on leave until Monday, and please remove me from your list.")
    assert classify_by_rules(reply, received=RECEIVED).intent.intent is Intent.unsubscribe


def test_an_automatic_message_never_unsubscribes():
    # An auto-responder quoting "unsubscribe" in its footer is not a person asking out.
    reply = ReplyContent(text="We received your message. To unsubscribe, visit our site.")
    automatic = reply.model_copy(update={"automatic": True})
    assert classify_by_rules(automatic, received=RECEIVED).intent.intent is Intent.auto_reply


def test_an_absence_subject_alone_is_out_of_office():
    reply = ReplyContent(subject="Abwesenheitsnotiz", text="Danke für Ihre Nachricht.")
    found = classify_by_rules(reply, received=RECEIVED)
    assert found.intent.intent is Intent.out_of_office
    assert found.intent.return_date is None


@pytest.mark.parametrize("reply", [None, ReplyContent()])
def test_no_text_is_other_for_a_person(reply):
    found = classify_by_rules(reply, received=RECEIVED)
    assert found.intent.intent is Intent.other
    assert found.intent.confidence == 0
    assert found.method is ClassificationMethod.rules
