"""Event files: every format and container read into events, malformed and ignored records."""

import copy
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.engagement.event_files import (
    EventFileError,
    detect_format,
    parse_record,
    read_event_file,
)
from core.engagement.event_records import EventFormat, Ignored
from core.engagement.events import BounceKind, Malformed, NormalisedEvent
from core.statuses import EngagementType

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"
SEND_A = "9f2c1e7a4b6d4e0f8a1b2c3d4e5f6a7b"
SEND_B = "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6"
SEND_C = "0b7d9c3e5f1a4d2b9e8c7f6a5b4c3d2e"


def _read(name: str, fmt: EventFormat | None = None) -> list:
    return list(read_event_file(FIXTURES / name, fmt))


def _events(records: list) -> list[NormalisedEvent]:
    return [r for r in records if isinstance(r, NormalisedEvent)]


def _problems(records: list) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for r in records if isinstance(r, Malformed)]


def _only(name: str) -> NormalisedEvent:
    [record] = _read(name)
    assert isinstance(record, NormalisedEvent), record
    return record


def _parse(record: dict, fmt: EventFormat = EventFormat.generic):
    return parse_record(record, fmt, source="test", line=7)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the generic format ------------------------------------------------------------------------


def test_generic_jsonl_reads_every_good_line_and_reports_every_bad_one():
    records = _read("generic.jsonl")
    events = _events(records)
    assert [(e.line, e.type) for e in events] == [
        (1, EngagementType.open),
        (2, EngagementType.click),
        (3, EngagementType.bounce),
        (4, EngagementType.bounce),
        (5, EngagementType.reply),
        (6, EngagementType.open),  # "Opened"
        (12, EngagementType.unsubscribe),  # "unsubscribed"
        (13, EngagementType.complaint),  # "spam_complaint"
        (14, EngagementType.auto_reply),
    ]
    # Line 9 is blank: skipped, and the lines after it keep their own numbers.
    assert _problems(records) == [
        (7, "record: not valid JSON (Expecting value, column 1)"),
        (8, "type: unknown type 'foo'"),
        (10, "occurredAt: timestamp has no time zone"),
        (11, "no emailSendId, messageId or email to match a send"),
        (15, "record: not a JSON object"),
        (16, "messageId: not a Message-ID"),
    ]
    assert all(r.source == "file:generic.jsonl" for r in records)
    assert not any(isinstance(r, Ignored) for r in records)


def test_generic_fields_are_normalised():
    events = {e.line: e for e in _events(_read("generic.jsonl"))}
    opened = events[1]
    assert opened.provider == "generic"
    assert opened.send_id == SEND_A
    assert opened.occurred_at == datetime(2025, 3, 4, 9, 15, tzinfo=UTC)
    assert opened.provider_event_id is None

    click = events[2]
    assert click.message_id == f"<{SEND_A}@mail.acme-sales.com>"  # the <> added
    assert click.url == "https://acme-sales.com/pricing"
    assert click.provider_event_id == "clk-000187"
    assert click.dedupe_key() == "generic:clk-000187"

    hard = events[3]
    assert hard.email == "dana.whitfield@example.org"  # lowercased
    assert hard.occurred_at == datetime(2025, 3, 4, 9, 15, tzinfo=UTC)  # epoch seconds
    assert hard.bounce_kind is BounceKind.hard  # the default for a bounce
    assert hard.diagnostic is not None
    assert hard.diagnostic.startswith("550 5.1.1")

    assert events[4].bounce_kind is BounceKind.soft
    reply = events[5]
    assert reply.message_id == f"<{SEND_B}@mail.acme-sales.com>"  # the <> kept once
    assert reply.occurred_at == datetime(2025, 3, 4, 10, 42, 7, tzinfo=UTC)  # +01:00 to UTC
    assert events[6].occurred_at == datetime(2025, 3, 4, 17, 0, tzinfo=UTC)  # -05:00 to UTC
    assert events[14].diagnostic == "Out of office until 10 March"
    for event in events.values():
        assert event.occurred_at.tzinfo is UTC
        assert event.references == ()


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("open", EngagementType.open),
        ("opened", EngagementType.open),
        ("clicked", EngagementType.click),
        ("replied", EngagementType.reply),
        ("auto_reply", EngagementType.auto_reply),
        ("bounced", EngagementType.bounce),
        ("unsubscribed", EngagementType.unsubscribe),
        ("spam_complaint", EngagementType.complaint),
        ("complaint", EngagementType.complaint),
        (" BOUNCE ", EngagementType.bounce),
    ],
)
def test_generic_type_aliases(alias, expected):
    event = _parse({"type": alias, "occurredAt": "2025-03-04T09:15:00Z", "emailSendId": "s1"})
    assert isinstance(event, NormalisedEvent)
    assert event.type is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-04T09:15:00Z", datetime(2025, 3, 4, 9, 15, tzinfo=UTC)),
        ("2025-03-04T10:15:00+01:00", datetime(2025, 3, 4, 9, 15, tzinfo=UTC)),
        ("2025-03-04 09:15:00.123456+00:00", datetime(2025, 3, 4, 9, 15, 0, 123456, tzinfo=UTC)),
        ("2019-11-05T16:33:54.9070259Z", datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC)),
        (1741079700, datetime(2025, 3, 4, 9, 15, tzinfo=UTC)),
        (1741079700.5, datetime(2025, 3, 4, 9, 15, 0, 500000, tzinfo=UTC)),
        ("1741079700", datetime(2025, 3, 4, 9, 15, tzinfo=UTC)),
        (" 1741079700.25 ", datetime(2025, 3, 4, 9, 15, 0, 250000, tzinfo=UTC)),
    ],
)
def test_times_become_aware_utc(value, expected):
    event = _parse({"type": "open", "occurredAt": value, "emailSendId": "s1"})
    assert isinstance(event, NormalisedEvent)
    assert event.occurred_at == expected
    assert event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2025-03-04T09:15:00", "occurredAt: timestamp has no time zone"),
        ("2025-03-04", "occurredAt: timestamp has no time zone"),
        ("yesterday", "occurredAt: not a date"),
        ("2025-13-01T00:00:00Z", "occurredAt: not a date"),
        (True, "occurredAt: not a date"),
        ([2025, 3, 4], "occurredAt: not a date"),
        (float("nan"), "occurredAt: not a date"),
        (1741079700000000, "occurredAt: not a date"),  # microseconds, not seconds
        (None, "occurredAt: missing"),
        ("", "occurredAt: missing"),
    ],
)
def test_bad_times_are_malformed(value, reason):
    result = _parse({"type": "open", "occurredAt": value, "emailSendId": "s1"})
    assert result == Malformed(source="test", line=7, reason=reason)


NO_MATCH = "no emailSendId, messageId or email to match a send"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": None}, "type: missing"),
        ({"type": 3}, "type: unknown type 3"),
        ({"emailSendId": None}, NO_MATCH),
        ({"emailSendId": None, "email": "  "}, NO_MATCH),
        ({"email": "nobody"}, "email: not an address"),
        ({"email": "a b@c.co"}, "email: not an address"),
        ({"messageId": "<a@b"}, "messageId: not a Message-ID"),
        ({"messageId": "<a b@c>"}, "messageId: not a Message-ID"),
        ({"emailSendId": ["s1"]}, "emailSendId: not text"),
        (
            {"type": "bounce", "bounceKind": "permanent"},
            "bounceKind: 'permanent' is not hard or soft",
        ),
    ],
)
def test_bad_generic_records_name_the_field(changes, reason):
    record = {"type": "open", "occurredAt": "2025-03-04T09:15:00Z", "emailSendId": "s1"}
    assert _parse(record | changes) == Malformed(source="test", line=7, reason=reason)


def test_bounce_kind_is_read_for_bounces_only():
    base = {"occurredAt": "2025-03-04T09:15:00Z", "emailSendId": "s1"}
    soft = _parse({**base, "type": "bounce", "bounceKind": "Soft"})
    assert isinstance(soft, NormalisedEvent)
    assert soft.bounce_kind is BounceKind.soft
    opened = _parse({**base, "type": "open", "bounceKind": "whatever"})
    assert isinstance(opened, NormalisedEvent)
    assert opened.bounce_kind is None


def test_a_long_diagnostic_is_capped():
    event = _parse(
        {"type": "bounce", "occurredAt": 1741079700, "emailSendId": "s1", "diagnostic": "x" * 5000}
    )
    assert isinstance(event, NormalisedEvent)
    assert event.diagnostic == "x" * 1000


def test_generic_csv_keeps_line_numbers_and_reads_past_bad_rows():
    records = _read("generic.csv")
    events = {e.line: e for e in _events(records)}
    assert sorted(events) == [2, 3, 4, 6, 9, 10]
    assert _problems(records) == [
        (7, "record: has 8 fields, the header has 9"),
        (8, "bounceKind: 'sometimes' is not hard or soft"),
        # The bounce on line 10 spans two lines: the next row is line 12.
        (12, "occurredAt: timestamp has no time zone"),
    ]
    assert events[2].send_id == SEND_A
    assert events[2].email is None  # an empty cell is an absent field
    assert events[2].url is None
    assert events[3].message_id == f"<{SEND_A}@mail.acme-sales.com>"
    assert events[3].url == "https://acme-sales.com/pricing?a=1&b=2"
    assert events[4].occurred_at == datetime(2025, 3, 4, 9, 15, tzinfo=UTC)  # "1741079700"
    assert events[4].email == "dana.whitfield@example.org"
    assert events[4].diagnostic == "550 5.1.1 User unknown, mailbox does not exist"
    assert events[9].type is EngagementType.complaint
    assert events[10].diagnostic == "421 4.7.0 Try again later\n(greylisted)"


def test_generic_json_array_counts_records_by_index():
    records = _read("generic.json")
    assert [(e.line, e.type) for e in _events(records)] == [
        (1, EngagementType.open),
        (2, EngagementType.click),
        (4, EngagementType.reply),
    ]
    assert _problems(records) == [(3, "occurredAt: not a date")]
    assert _events(records)[1].occurred_at == datetime(2025, 3, 4, 9, 20, 0, 500000, tzinfo=UTC)


# --- SendGrid ----------------------------------------------------------------------------------


def test_sendgrid_event_webhook_mapping():
    records = _read("sendgrid.json")
    ignored = [(r.line, r.reason) for r in records if isinstance(r, Ignored)]
    assert ignored == [
        (1, "event: 'processed' is not stored"),
        (3, "event: 'delivered' is not stored"),
        (9, "event: 'dropped' (Unsubscribed Address) is not stored"),
        (13, "event: 'group_resubscribe' is not stored"),
    ]
    assert _problems(records) == []
    events = {e.line: e for e in _events(records)}
    summary = {line: (e.type, e.bounce_kind) for line, e in events.items()}
    assert summary == {
        2: (EngagementType.bounce, BounceKind.soft),  # deferred
        4: (EngagementType.open, None),
        5: (EngagementType.click, None),
        6: (EngagementType.bounce, BounceKind.hard),  # bounce, type bounce
        7: (EngagementType.bounce, BounceKind.soft),  # bounce, type blocked
        8: (EngagementType.bounce, BounceKind.hard),  # dropped: Bounced Address
        10: (EngagementType.complaint, None),  # spamreport
        11: (EngagementType.unsubscribe, None),
        12: (EngagementType.unsubscribe, None),  # group_unsubscribe
        14: (EngagementType.open, None),  # the open of line 4, delivered again
    }
    assert all(e.provider == "sendgrid" for e in events.values())

    bounce = events[6]
    assert bounce.provider_event_id == "6g4ZI7SA-xmRDv57GoPIPw"
    assert bounce.dedupe_key() == "sendgrid:6g4ZI7SA-xmRDv57GoPIPw"
    assert bounce.send_id == SEND_A  # the send_id custom argument
    assert bounce.message_id == f"<{SEND_A}@mail.acme-sales.com>"  # smtp-id
    assert bounce.email == "dana.whitfield@example.org"
    assert bounce.occurred_at == datetime(2025, 3, 4, 9, 15, tzinfo=UTC)
    assert bounce.diagnostic == "550 5.1.1 The email account that you tried to reach does not exist"
    assert events[2].diagnostic == "400 try again later (attempt 5)"
    assert events[8].diagnostic == "5.0.0 Bounced Address"
    assert events[5].url == "https://acme-sales.com/pricing"
    assert events[12].url is None  # a group unsubscribe's URL is SendGrid's page, not a click
    assert events[11].send_id is None  # no custom argument: matched by address


def test_a_sendgrid_event_delivered_twice_has_one_dedupe_key():
    events = {e.line: e for e in _events(_read("sendgrid.json"))}
    assert events[4].dedupe_key() == events[14].dedupe_key() == "sendgrid:FOTFFO0ecsBE-zxFXfs6WA"
    keys = Counter(e.dedupe_key() for e in events.values())
    assert [key for key, n in keys.items() if n > 1] == ["sendgrid:FOTFFO0ecsBE-zxFXfs6WA"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event": "machine_open"}, "event: unknown type 'machine_open'"),
        ({"event": None}, "event: missing"),
        ({"event": ["open"]}, "event: unknown type ['open']"),
        ({"email": None}, "no send_id, smtp-id or email to match a send"),
        ({"timestamp": None}, "timestamp: missing"),
        ({"timestamp": "1741079700"}, None),  # a string of digits is still epoch seconds
    ],
)
def test_bad_sendgrid_records(changes, reason):
    record = {"event": "open", "sg_event_id": "e1", "email": "a@b.co", "timestamp": 1741079700}
    result = _parse(record | changes, EventFormat.sendgrid)
    if reason is None:
        assert isinstance(result, NormalisedEvent)
    else:
        assert result == Malformed(source="test", line=7, reason=reason)


# --- Postmark ----------------------------------------------------------------------------------


def test_postmark_bounce():
    event = _only("postmark_bounce.json")
    assert (event.type, event.bounce_kind) == (EngagementType.bounce, BounceKind.hard)
    assert event.provider == "postmark"
    assert event.provider_event_id == "4323372036854775807"  # the bounce ID
    assert event.dedupe_key() == "postmark:4323372036854775807"
    assert event.send_id == SEND_A  # Metadata.send_id
    assert event.message_id is None  # Postmark's MessageID is not our Message-ID
    assert event.email == "dana.whitfield@example.org"
    assert event.occurred_at == datetime(2025, 3, 4, 9, 15, 0, 907025, tzinfo=UTC)
    assert event.diagnostic == (
        "HardBounce: smtp;550 5.1.1 The email account that you tried to reach does not exist."
    )


def test_postmark_open_and_click_are_keyed_by_content():
    opened = _only("postmark_open.json")
    assert opened.type is EngagementType.open
    assert opened.send_id == SEND_B
    assert opened.email == "sam@northwind.io"
    assert opened.occurred_at == datetime(2025, 3, 4, 15, 20, 31, 123456, tzinfo=UTC)
    assert opened.provider_event_id is None
    assert opened.dedupe_key().startswith("postmark:sha256:")

    click = _only("postmark_click.json")
    assert click.type is EngagementType.click
    assert click.url == "https://acme-sales.com/pricing"  # OriginalLink, not ClickLocation
    assert click.send_id == SEND_B
    assert click.provider_event_id is None


def test_postmark_spam_complaint():
    event = _only("postmark_spam.json")
    assert event.type is EngagementType.complaint
    assert event.bounce_kind is None
    assert event.provider_event_id == "4323372036854775808"
    assert event.send_id == SEND_B
    assert event.email == "sam@northwind.io"


def _postmark_bounce(**changes) -> dict:
    record = json.loads((FIXTURES / "postmark_bounce.json").read_text())
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("bounce_type", "kind", "bounce_kind"),
    [
        ("HardBounce", EngagementType.bounce, BounceKind.hard),
        ("BadEmailAddress", EngagementType.bounce, BounceKind.hard),
        ("SoftBounce", EngagementType.bounce, BounceKind.soft),
        ("Transient", EngagementType.bounce, BounceKind.soft),
        ("DnsError", EngagementType.bounce, BounceKind.soft),
        ("SpamNotification", EngagementType.bounce, BounceKind.soft),
        ("Unknown", EngagementType.bounce, BounceKind.soft),
        ("AutoResponder", EngagementType.auto_reply, None),
        ("Unsubscribe", EngagementType.unsubscribe, None),
        ("SpamComplaint", EngagementType.complaint, None),
    ],
)
def test_postmark_bounce_types(bounce_type, kind, bounce_kind):
    event = _parse(_postmark_bounce(Type=bounce_type), EventFormat.postmark)
    assert isinstance(event, NormalisedEvent)
    assert (event.type, event.bounce_kind) == (kind, bounce_kind)


def test_postmark_records_that_are_not_stored_or_not_readable():
    subscribe = _parse(_postmark_bounce(Type="Subscribe"), EventFormat.postmark)
    assert subscribe == Ignored(source="test", line=7, reason="Type: 'Subscribe' is not stored")
    assert _parse(_postmark_bounce(Type="Gremlins"), EventFormat.postmark) == Malformed(
        source="test", line=7, reason="Type: unknown bounce type 'Gremlins'"
    )
    delivery = {
        "RecordType": "Delivery",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "sam@northwind.io",
        "DeliveredAt": "2025-03-04T09:15:00Z",
    }
    assert isinstance(_parse(delivery, EventFormat.postmark), Ignored)
    assert _parse({"RecordType": "Inbound"}, EventFormat.postmark) == Malformed(
        source="test", line=7, reason="RecordType: unknown type 'Inbound'"
    )
    no_match = _postmark_bounce(Email=None, Metadata={})
    assert _parse(no_match, EventFormat.postmark) == Malformed(
        source="test", line=7, reason="no Metadata.send_id or Email to match a send"
    )


def _subscription_change(suppress: bool, reason: str | None) -> dict:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 123456,
        "MessageStream": "outbound",
        "ChangedAt": "2025-03-04T10:53:34.416071Z",
        "Recipient": "Ops@Northwind.io",
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": reason,
        "Tag": None,
        "Metadata": {"send_id": SEND_B} if suppress else {},
    }


def test_postmark_subscription_change_is_an_unsubscribe_only_for_a_manual_suppression():
    event = _parse(_subscription_change(True, "ManualSuppression"), EventFormat.postmark)
    assert isinstance(event, NormalisedEvent)
    assert event.type is EngagementType.unsubscribe
    assert (event.send_id, event.email) == (SEND_B, "ops@northwind.io")
    assert event.occurred_at == datetime(2025, 3, 4, 10, 53, 34, 416071, tzinfo=UTC)
    assert event.diagnostic == "ManualSuppression by Recipient"
    # A hard bounce or a complaint arrives as its own Bounce or SpamComplaint record.
    hard = _parse(_subscription_change(True, "HardBounce"), EventFormat.postmark)
    assert isinstance(hard, Ignored)
    assert hard.reason == "SubscriptionChange: HardBounce is not stored"
    reactivation = _parse(_subscription_change(False, None), EventFormat.postmark)
    assert isinstance(reactivation, Ignored)
    assert reactivation.reason == "SubscriptionChange: reactivation is not stored"


# --- Mailgun -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "bounce_kind"),
    [
        ("mailgun_failed_permanent.json", EngagementType.bounce, BounceKind.hard),
        ("mailgun_failed_temporary.json", EngagementType.bounce, BounceKind.soft),
        ("mailgun_opened.json", EngagementType.open, None),
        ("mailgun_clicked.json", EngagementType.click, None),
        ("mailgun_unsubscribed.json", EngagementType.unsubscribe, None),
        ("mailgun_complained.json", EngagementType.complaint, None),
    ],
)
def test_mailgun_webhooks(name, kind, bounce_kind):
    event = _only(name)
    assert (event.type, event.bounce_kind) == (kind, bounce_kind)
    assert event.provider == "mailgun"
    body = json.loads((FIXTURES / name).read_text())
    assert set(body["signature"]) == {"timestamp", "token", "signature"}
    assert event.provider_event_id == body["event-data"]["id"]
    assert event.dedupe_key() == f"mailgun:{body['event-data']['id']}"
    assert event.message_id is not None
    assert event.message_id.startswith("<")
    assert event.message_id.endswith("@mail.acme-sales.com>")
    assert event.occurred_at.tzinfo is UTC


def test_mailgun_fields():
    failed = _only("mailgun_failed_permanent.json")
    assert failed.send_id == SEND_A  # user-variables.send_id
    assert failed.message_id == f"<{SEND_A}@mail.acme-sales.com>"  # the header had no <>
    assert failed.email == "dana.whitfield@example.org"
    assert failed.occurred_at == datetime(2025, 3, 4, 9, 15, 0, 375624, tzinfo=UTC)
    assert (
        failed.diagnostic == "550 5.1.1 The email account that you tried to reach does not exist."
    )
    temporary = _only("mailgun_failed_temporary.json")
    assert temporary.send_id is None  # no user variable: matched by Message-ID
    assert temporary.message_id == f"<{SEND_C}@mail.acme-sales.com>"  # already had <>
    assert _only("mailgun_clicked.json").url == "https://acme-sales.com/pricing"


def test_mailgun_bare_event_data_from_the_events_api():
    data = json.loads((FIXTURES / "mailgun_opened.json").read_text())["event-data"]
    assert detect_format(data) is EventFormat.mailgun
    webhook = json.loads((FIXTURES / "mailgun_opened.json").read_text())
    assert _parse(data, EventFormat.mailgun) == _parse(webhook, EventFormat.mailgun)


@pytest.mark.parametrize("name", ["delivered", "accepted", "rejected", "stored"])
def test_mailgun_events_that_are_not_stored(name):
    record = {"event-data": {"event": name, "timestamp": 1741079700.1, "id": "x"}}
    assert _parse(record, EventFormat.mailgun) == Ignored(
        source="test", line=7, reason=f"event: {name!r} is not stored"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"severity": "fatal"}, "severity: 'fatal' is not permanent or temporary"),
        ({"severity": None}, "severity: None is not permanent or temporary"),
        ({"event": "bounced"}, "event: unknown type 'bounced'"),
        ({"recipient": None}, "no user-variables.send_id, message-id or recipient to match a send"),
        ({"message": []}, "message: not an object"),
        ({"user-variables": "send_id=1"}, "user-variables: not an object"),
    ],
)
def test_bad_mailgun_records(changes, reason):
    data = {"event": "failed", "severity": "permanent", "recipient": "a@b.co", "timestamp": 1}
    result = _parse({"signature": {}, "event-data": data | changes}, EventFormat.mailgun)
    assert result == Malformed(source="test", line=7, reason=reason)


def test_mailgun_event_data_must_be_an_object():
    assert _parse({"signature": {}, "event-data": "opened"}, EventFormat.mailgun) == Malformed(
        source="test", line=7, reason="event-data: not an object"
    )


# --- across formats ----------------------------------------------------------------------------


# Event files only: machine/ holds the machine-event exports and their manifest.
ALL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir() if p.is_file())


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_dedupe_keys_are_stable_across_reads(name):
    first = _read(name)
    second = _read(name)
    assert first == second
    keys = [e.dedupe_key() for e in _events(first)]
    assert keys == [e.dedupe_key() for e in _events(second)]
    assert keys  # every fixture holds at least one event


def test_the_same_event_in_another_container_has_the_same_key():
    # A line number and a source are where an event was read, not what it says.
    jsonl = {e.send_id: e for e in _events(_read("generic.jsonl")) if e.line == 1}
    array = {e.send_id: e for e in _events(_read("generic.json")) if e.line == 1}
    assert jsonl[SEND_A].dedupe_key() == array[SEND_A].dedupe_key()


def test_format_is_detected_per_record(tmp_path):
    lines = [
        {"type": "open", "occurredAt": "2025-03-04T09:15:00Z", "emailSendId": SEND_A},
        json.loads((FIXTURES / "sendgrid.json").read_text())[3],
        json.loads((FIXTURES / "postmark_open.json").read_text()),
        json.loads((FIXTURES / "mailgun_clicked.json").read_text()),
        json.loads((FIXTURES / "mailgun_opened.json").read_text())["event-data"],
    ]
    path = tmp_path / "mixed.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    events = list(read_event_file(path, source="upload:42"))
    assert [(e.line, e.provider, e.type) for e in events] == [
        (1, "generic", EngagementType.open),
        (2, "sendgrid", EngagementType.open),
        (3, "postmark", EngagementType.open),
        (4, "mailgun", EngagementType.click),
        (5, "mailgun", EngagementType.open),
    ]
    assert {e.source for e in events} == {"upload:42"}
    # A format given for the file applies to every record, detected or not.
    forced = list(read_event_file(path, EventFormat.generic))
    assert [r.reason for r in forced if isinstance(r, Malformed)] == ["type: missing"] * 4


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"sg_event_id": "x"}, EventFormat.sendgrid),
        ({"event": "open", "sg_message_id": "x"}, EventFormat.sendgrid),
        ({"RecordType": "Open"}, EventFormat.postmark),
        ({"signature": {}, "event-data": {}}, EventFormat.mailgun),
        ({"event": "opened", "log-level": "info"}, EventFormat.mailgun),
        ({"event": "open"}, EventFormat.generic),
        ({"type": "open"}, EventFormat.generic),
    ],
)
def test_detect_format(record, fmt):
    assert detect_format(record) is fmt


def _variants(record: dict):
    """The record with each value, at any depth, replaced by something of the wrong shape."""
    for key, value in record.items():
        for wrong in (None, "", "  ", 0, -1, 1.5, True, [], {}, ["x"], {"a": 1}, "\x00"):
            changed = copy.deepcopy(record)
            changed[key] = wrong
            yield changed
        if isinstance(value, dict):
            for inner in _variants(value):
                changed = copy.deepcopy(record)
                changed[key] = inner
                yield changed


@pytest.mark.parametrize("name", [n for n in ALL_FIXTURES if n.endswith(".json")])
def test_no_record_shape_makes_the_parser_raise(name):
    document = json.loads((FIXTURES / name).read_text())
    for record in document if isinstance(document, list) else [document]:
        for variant in _variants(record):
            result = parse_record(variant, detect_format(variant), source="t", line=1)
            assert isinstance(result, NormalisedEvent | Malformed | Ignored)


# --- containers --------------------------------------------------------------------------------


def test_a_line_that_is_not_utf8_is_malformed_and_the_rest_read(tmp_path):
    good = json.dumps({"type": "open", "occurredAt": 1741079700, "email": "a@b.co"}).encode()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + b'{"type": "\xff"}\n' + good + b"\n")
    records = list(read_event_file(path))
    assert [type(r) for r in records] == [NormalisedEvent, Malformed, NormalisedEvent]
    assert _problems(records) == [(2, "record: not valid UTF-8")]


def test_csv_bytes_that_are_not_utf8_name_their_field(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"type,occurredAt,email,diagnostic\n"
        b"bounce,1741079700,a@b.co,caf\xe9\n"
        b"open,1741079700,a@b.co,\n"
    )
    records = list(read_event_file(path))
    assert _problems(records) == [(2, "diagnostic: not valid UTF-8")]
    assert [e.line for e in _events(records)] == [3]


def test_a_single_json_object_is_one_record(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{"type": "open", "occurredAt": 1741079700, "email": "a@b.co"}')
    [event] = read_event_file(path)
    assert isinstance(event, NormalisedEvent)
    assert (event.line, event.source) == (1, "file:one.json")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.json", '[{"type": "open"', "broken.json: not valid JSON"),
        ("scalar.json", "42", "expected a JSON array of objects, or one object"),
        ("nohead.csv", "kind,when,email\nopen,1,a@b.co\n", "line 1: no type or occurredAt column"),
        ("twice.csv", "type,occurredAt,email,email\n", "line 1: columns appear twice: email"),
    ],
)
def test_unusable_files_raise_when_read(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    records = read_event_file(path)
    with pytest.raises(EventFileError, match=message):
        list(records)


def test_wrong_suffix_or_format_raises_at_once(tmp_path):
    with pytest.raises(EventFileError, match=r"unknown suffix '\.xml'"):
        read_event_file(tmp_path / "events.xml")
    with pytest.raises(EventFileError, match="generic format only"):
        read_event_file(tmp_path / "events.csv", EventFormat.sendgrid)


def test_empty_files_hold_no_records(tmp_path):
    for name in ("empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("")
        assert list(read_event_file(tmp_path / name)) == []
    (tmp_path / "empty.json").write_text("[]")
    assert list(read_event_file(tmp_path / "empty.json")) == []
