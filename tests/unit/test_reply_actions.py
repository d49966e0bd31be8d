"""What each intent does (decided in plain code), when a waiting lead's follow-up may leave, who
a referral becomes, and the checks on an LLM's answer."""

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from core.replies.actions import (
    Decision,
    Referrer,
    ReplyAction,
    decide,
    moved_schedule,
    referral_row,
    resume_at,
)
from core.replies.intent import Intent, IntentAnswer, ReplyIntent
from core.replies.prompt import RESPONSE_FORMAT
from core.statuses import EngagementType

WEEKDAYS = {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}
NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # a Wednesday
PAUSE = timedelta(days=7)


def intent(name: Intent, confidence: float = 0.9, **fields) -> ReplyIntent:
    return ReplyIntent(intent=name, confidence=confidence, summary="s", **fields)


@pytest.mark.parametrize(
    ("name", "event", "expected"),
    [
        (Intent.interested, EngagementType.reply, Decision(ReplyAction.stopped, "interested")),
        (
            Intent.meeting_request,
            EngagementType.reply,
            Decision(ReplyAction.stopped, "meeting_request"),
        ),
        (
            Intent.not_interested,
            EngagementType.reply,
            Decision(ReplyAction.stopped, "not_interested"),
        ),
        (Intent.out_of_office, EngagementType.auto_reply, Decision(ReplyAction.rescheduled)),
        (Intent.not_now, EngagementType.reply, Decision(ReplyAction.rescheduled)),
        (Intent.referral, EngagementType.reply, Decision(ReplyAction.referred, "referral")),
        (Intent.unsubscribe, EngagementType.reply, Decision(ReplyAction.unsubscribed)),
        (Intent.auto_reply, EngagementType.auto_reply, Decision(ReplyAction.recorded)),
        (Intent.other, EngagementType.reply, Decision(ReplyAction.stopped, "replied")),
        # An auto-reply nobody could classify stops nothing, as before there were intents.
        (Intent.other, EngagementType.auto_reply, Decision(ReplyAction.recorded)),
    ],
)
def test_each_intent_decides_its_action(name, event, expected):
    assert decide(intent(name), event, min_confidence=0.6) == expected


@pytest.mark.parametrize("name", list(Intent))
def test_low_confidence_stops_a_reply_as_before(name):
    decision = decide(intent(name, confidence=0.59), EngagementType.reply, min_confidence=0.6)
    assert decision == Decision(ReplyAction.stopped, "replied")


def _resume(found: ReplyIntent, *, rules=None, timezone=None, country=None) -> datetime:
    return resume_at(
        found,
        now=NOW,
        default_pause=PAUSE,
        raw_rules=rules if rules is not None else {"timezone": "UTC", "window": WEEKDAYS},
        lead_timezone=timezone,
        lead_country=country,
    )


def test_a_return_date_resumes_at_the_window_of_the_next_working_day():
    # Back on Monday 7 December: the follow-up waits for Tuesday's window.
    back_monday = intent(Intent.out_of_office, return_date=date(2026, 12, 7))
    assert _resume(back_monday) == datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    # Back on Friday 11 December: the next working day is Monday the 14th.
    back_friday = intent(Intent.out_of_office, return_date=date(2026, 12, 11))
    assert _resume(back_friday) == datetime(2026, 12, 14, 9, 0, tzinfo=UTC)


def test_the_lead_zone_and_closed_days_apply():
    back = intent(Intent.not_now, return_date=date(2026, 12, 23))
    rules = {
        "timezone": "UTC",
        "window": WEEKDAYS,
        "skipHolidays": True,
        "skipDates": ["2026-12-24"],
    }
    # Thursday 24th is a skip date, Friday 25th Christmas; in London Monday 28th is Boxing Day
    # observed, so Tuesday 29th at 09:00 (UTC in winter); in New York Monday, 09:00 EST.
    assert _resume(back, rules=rules, timezone="Europe/London") == datetime(
        2026, 12, 29, 9, 0, tzinfo=UTC
    )
    assert _resume(back, rules=rules, timezone="America/New_York") == datetime(
        2026, 12, 28, 14, 0, tzinfo=UTC
    )


def test_without_a_date_the_default_pause_applies():
    # Wednesday 15:00 plus seven days is Wednesday 9 December, 15:00: inside the window.
    assert _resume(intent(Intent.out_of_office)) == NOW + PAUSE
    weekend = {"timezone": "UTC", "window": {**WEEKDAYS, "end": "15:00"}}
    assert _resume(intent(Intent.not_now), rules=weekend) == datetime(
        2026, 12, 10, 9, 0, tzinfo=UTC
    )


def test_rules_that_do_not_validate_still_give_a_moment():
    assert _resume(intent(Intent.out_of_office), rules={"window": "nonsense"}) >= NOW + PAUSE


def test_pending_sends_and_the_next_step_move_together():
    resume = datetime(2026, 12, 8, 9, tzinfo=UTC)
    first = datetime(2026, 12, 3, 9, tzinfo=UTC)
    next_step = datetime(2026, 12, 6, 9, tzinfo=UTC)
    assert moved_schedule(resume, next_step=next_step, first_pending=first) == (
        datetime(2026, 12, 11, 9, tzinfo=UTC),
        timedelta(days=5),
    )
    # Nothing pending: the next step itself waits.
    assert moved_schedule(resume, next_step=next_step, first_pending=None) == (resume, timedelta(0))
    # Already later than the return: left alone.
    later = datetime(2026, 12, 20, tzinfo=UTC)
    assert moved_schedule(resume, next_step=later, first_pending=None) == (later, timedelta(0))
    assert moved_schedule(resume, next_step=None, first_pending=None) == (None, timedelta(0))


REFERRER = Referrer(
    lead_id="lead-1",
    email="kate@alpine.example",
    first_name="Kate",
    last_name="Moss",
    profile={"companyName": "Alpine", "website": "alpine.example", "title": "CTO"},
)


def test_a_referral_becomes_a_lead_of_the_same_company():
    found = intent(
        Intent.referral, referral_email="Maria.Lopez@alpine.example", referral_name="Maria Lopez"
    )
    row = referral_row(found, reply_text="ask maria.lopez@alpine.example", referrer=REFERRER)
    assert not isinstance(row, str)
    assert row["email"] == "Maria.Lopez@alpine.example"
    assert (row["firstName"], row["lastName"]) == ("Maria", "Lopez")
    assert (row["companyName"], row["website"]) == ("Alpine", "alpine.example")
    assert row["customFields"] == {"referredBy": "Kate Moss", "referredByLeadId": "lead-1"}


def test_a_referral_elsewhere_inherits_no_company():
    found = intent(Intent.referral, referral_email="bob@other.example")
    row = referral_row(found, reply_text="write to bob@other.example.", referrer=REFERRER)
    assert not isinstance(row, str)
    assert row["companyName"] is None and row["firstName"] is None


@pytest.mark.parametrize(
    ("address", "text", "why"),
    [
        (None, "ask Maria", "no address given"),
        ("maria@alpine.example", "ask Maria", "not written in the reply"),
        ("maria@@alpine", "ask maria@@alpine", "not valid"),
        ("kate@alpine.example", "that is me: kate@alpine.example", "the referrer's own"),
    ],
)
def test_a_referral_is_refused_with_the_reason(address, text, why):
    found = intent(Intent.referral, referral_email=address)
    refused = referral_row(found, reply_text=text, referrer=REFERRER)
    assert isinstance(refused, str) and why in refused
    assert "@" not in refused


def _answer(**changes) -> IntentAnswer:
    fields = {
        "intent": "interested",
        "confidence": 0.8,
        "return_date": None,
        "referral_email": None,
        "referral_name": None,
        "summary": "Wants a demo.",
    } | changes
    return IntentAnswer.model_validate(fields)


def test_an_answer_summary_loses_its_addresses_and_line_breaks():
    checked = ReplyIntent.from_answer(
        _answer(summary="Write to\nmaria@alpine.example\tnow"), received=date(2026, 12, 2)
    )
    assert checked.summary == "Write to <address> now"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-10", date(2026, 12, 10)),
        ("2026-12-02", None),  # the day of the reply: not a return
        ("2027-12-31", None),  # more than a year out
        ("next week", None),  # not a date
    ],
)
def test_an_answer_return_date_must_be_ahead_and_within_a_year(value, expected):
    checked = ReplyIntent.from_answer(_answer(return_date=value), received=date(2026, 12, 2))
    assert checked.return_date == expected


@pytest.mark.parametrize("confidence", [-0.1, 1.5])
def test_an_answer_confidence_out_of_bounds_is_refused(confidence):
    with pytest.raises(ValidationError):
        ReplyIntent.from_answer(_answer(confidence=confidence), received=date(2026, 12, 2))


def test_the_answer_schema_is_strict_and_has_no_ref_with_siblings():
    schema = RESPONSE_FORMAT["json_schema"]["schema"]
    assert RESPONSE_FORMAT["json_schema"] | {"schema": None} == {
        "name": "IntentAnswer",
        "strict": True,
        "schema": None,
    }
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    # The API refuses a `$ref` beside a description: the intent's enum is inlined.
    assert "$ref" not in schema["properties"]["intent"]
    assert schema["properties"]["intent"]["enum"] == [intent.value for intent in Intent]
