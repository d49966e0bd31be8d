"""Inbound mail: every fixture message classified, Maildir and mbox read read-only."""

import email
import email.policy
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.engagement.bounces import read_with_flufl
from core.engagement.events import BounceKind, Malformed, NormalisedEvent
from core.engagement.inbound import classify_message
from core.engagement.inbound_sources import InboundSourceError, read_mail_path
from core.statuses import EngagementType

MAIL = Path(__file__).resolve().parent.parent / "fixtures" / "mail"
INBOX = MAIL / "inbox"
MBOX = MAIL / "sample.mbox"
REPLY, AUTO, BOUNCE = EngagementType.reply, EngagementType.auto_reply, EngagementType.bounce
HARD, SOFT = BounceKind.hard, BounceKind.soft
ABC = "<abc123@seller.example>"


def by_name(results: list[tuple[str, object]]) -> dict[str, object]:
    """Maildir results keyed by the descriptive end of the fixture's file name."""
    return {key.rsplit(".", 1)[1]: result for key, result in results}


@pytest.fixture(scope="module")
def inbox() -> dict[str, object]:
    return by_name(list(read_mail_path(INBOX)))


def event(result: object) -> NormalisedEvent:
    assert isinstance(result, NormalisedEvent), result
    return result


# name: (type, bounce kind, our message id, references, email, diagnostic, own Message-ID)
EXPECTED = {
    "reply-in-reply-to": (
        REPLY, None, None, (ABC,), "ada@lead.example", None,
        "<CAF=reply1+x@mail.lead.example>",
    ),
    "reply-references-only": (
        REPLY, None, None, ("<ghi789@seller.example>", "<jkl012@seller.example>"),
        "bob@lead.example", None, "<DB9PR01MB1234.reply2@outlook.lead.example>",
    ),
    "reply-quote-only": (
        REPLY, None, None, (), "carol@lead.example", None, "<reply3.carol@webmail.lead.example>",
    ),
    "ooo-auto-submitted": (
        AUTO, None, None, (ABC,), "dave@lead.example", None, "<ooo1.dave@mail.lead.example>",
    ),
    "ooo-subject-only": (
        AUTO, None, None, (), "eve@lead.example", None, "<ooo2.eve@exchange.lead.example>",
    ),
    "dsn-hard": (
        BOUNCE, HARD, "<def456@seller.example>", (), "gone@lead.example",
        "550 5.1.1 <gone@lead.example>: Recipient address rejected: User unknown in virtual"
        " mailbox table",
        "<20251126102000.9A1B2C3D4E@mx.seller.example>",
    ),
    "dsn-soft": (
        BOUNCE, SOFT, "<mno345@seller.example>", (), "full@lead.example",
        "452 4.2.2 The email account that you tried to reach is over quota",
        "<dsn-soft.7F6E5D4C3B@mx.lead.example>",
    ),
    "mailer-daemon-plain": (
        BOUNCE, HARD, "<pqr678@seller.example>", (), "nobody@lead.example",
        "550 5.1.1 The email account that you tried to reach does not exist.",
        "<nonrfc.1A2B3C4D5E@mx.google.com>",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", EXPECTED)
def test_every_fixture_is_classified(inbox: dict[str, object], name: str) -> None:
    kind, bounce, message_id, references, email, diagnostic, own_id = EXPECTED[name]
    found = event(inbox[name])
    assert found.type == kind
    assert found.bounce_kind == bounce
    assert found.message_id == message_id
    assert found.references == references
    assert found.email == email
    assert found.diagnostic == diagnostic
    assert found.provider == "mailbox"
    assert found.provider_event_id == own_id
    assert found.dedupe_key() == f"mailbox:{own_id}"
    assert found.source == f"maildir:{INBOX}"
    assert found.occurred_at.utcoffset() is not None


def test_times_come_from_the_date_header_with_its_zone(inbox: dict[str, object]) -> None:
    assert event(inbox["reply-in-reply-to"]).occurred_at == datetime(
        2025, 11, 26, 10, 15, tzinfo=UTC
    )
    assert event(inbox["mailer-daemon-plain"]).occurred_at == datetime(
        2025, 11, 26, 4, 0, tzinfo=timezone(timedelta(hours=-8))
    )


def test_the_garbage_file_is_malformed_with_a_reason(inbox: dict[str, object]) -> None:
    garbage = inbox["garbage"]
    assert isinstance(garbage, Malformed)
    assert garbage.reason == "no header fields: not an email"
    assert garbage.source == f"maildir:{INBOX}"
    assert garbage.line == 9


def test_bodies_never_reach_any_event_field() -> None:
    results = [result for _, result in read_mail_path(INBOX)]
    results += [result for _, result in read_mail_path(MBOX)]
    assert len(results) == 12
    for result in results:
        assert result is not None
        dumped = result.model_dump_json()
        assert "BODY-MARKER" not in dumped
        assert "ship faster" not in dumped  # the quoted original of ours
        if isinstance(result, NormalisedEvent):
            assert "BODY-MARKER" not in str(result.event_metadata())


def test_maildir_keys_are_sorted_file_names_and_lines_count_from_one() -> None:
    keys = [key for key, _ in read_mail_path(INBOX)]
    assert keys == sorted(
        path.name for folder in ("cur", "new") for path in (INBOX / folder).iterdir()
    )
    lines = [result.line for _, result in read_mail_path(INBOX) if result is not None]
    assert lines == list(range(1, 10))


def test_dotfiles_and_tmp_are_not_messages(tmp_path: Path) -> None:
    box = tmp_path / "inbox"
    shutil.copytree(INBOX, box)
    (box / "cur" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (box / "new" / ".hidden").write_bytes((INBOX / "cur").joinpath(_name("dsn-hard")).read_bytes())
    (box / "tmp" / "1764151299.M0P1.being-delivered").write_bytes(b"From: x@y.example\n\nhalf")
    keys = [key for key, _ in read_mail_path(box, source="maildir:copy")]
    assert len(keys) == 9
    assert not [key for key in keys if key.startswith(".") or "being-delivered" in key]


def test_reading_changes_nothing_on_disk(tmp_path: Path) -> None:
    box, mbox = tmp_path / "inbox", tmp_path / "sample.mbox"
    shutil.copytree(INBOX, box)
    shutil.copy2(MBOX, mbox)
    before = _snapshot(tmp_path)
    for path in (box, mbox):
        assert len(list(read_mail_path(path))) > 0
        assert len(list(read_mail_path(path))) > 0  # a second read sees the same messages
    assert _snapshot(tmp_path) == before


def test_reading_twice_gives_the_same_dedupe_keys() -> None:
    first = [r.dedupe_key() for _, r in read_mail_path(INBOX) if isinstance(r, NormalisedEvent)]
    again = [r.dedupe_key() for _, r in read_mail_path(INBOX) if isinstance(r, NormalisedEvent)]
    assert first == again
    assert len(set(first)) == 8


def test_mbox_messages_in_file_order() -> None:
    results = dict(read_mail_path(MBOX, source="mbox:replies"))
    assert list(results) == ["0", "1", "2"]
    reply, ooo, dsn = (event(results[key]) for key in ("0", "1", "2"))
    assert (reply.type, reply.references, reply.email) == (REPLY, (ABC,), "ada@lead.example")
    assert reply.source == "mbox:replies"
    # An RFC 2047 encoded French subject with a non-breaking space before the colon.
    assert (ooo.type, ooo.email) == (AUTO, "francoise@lead.example")
    assert (dsn.type, dsn.bounce_kind, dsn.message_id) == (BOUNCE, HARD, "<stu901@seller.example>")
    assert (dsn.email, dsn.diagnostic) == (
        "blocked@lead.example",
        "554 5.7.1 Message rejected as spam",
    )
    assert [event(results[key]).line for key in results] == [1, 2, 3]


def test_a_path_that_is_no_mail_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InboundSourceError, match="no such Maildir or mbox"):
        list(read_mail_path(tmp_path / "missing"))
    with pytest.raises(InboundSourceError, match="not a Maildir"):
        list(read_mail_path(tmp_path))


# -- single messages ---------------------------------------------------------------------------


def message(*headers: str, body: str = "BODY-MARKER: hello\n") -> bytes:
    defaults = {
        "From": "Ada <ada@lead.example>",
        "To": "sam@seller.example",
        "Subject": "Re: Quick idea",
        "Date": "Wed, 26 Nov 2025 10:00:00 +0000",
        "Message-ID": "<own@lead.example>",
    }
    given = dict(header.split(": ", 1) for header in headers)
    lines = [f"{name}: {value}" for name, value in (defaults | given).items() if value != "-"]
    return ("\n".join(lines) + "\n\n" + body).encode()


def classify(raw: bytes) -> NormalisedEvent | Malformed | None:
    return classify_message(raw, source="test", line=7)


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-replied; owner-email=ada@lead.example",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: auto_reply",
        "X-Auto-Response-Suppress: All",
        "X-Auto-Response-Suppress: DR, OOF, AutoReply",
        "Subject: Out of Office: Quick idea",
        "Subject: Automatic reply: Quick idea",
        "Subject: Auto-Reply: Quick idea",
        "Subject: Abwesenheitsnotiz: Quick idea",
        "Subject: AW: Abwesenheitsnotiz",
        "Subject: Réponse automatique : Quick idea",
        "Subject: I am out of the office until Monday",
        "Subject: [Autoreply] Quick idea",
    ],
)
def test_auto_replies(header: str) -> None:
    assert event(classify(message(header))).type == AUTO


@pytest.mark.parametrize(
    "header", ["Auto-Submitted: no", "Precedence: list", "Subject: Re: Our office moved"]
)
def test_replies_that_only_look_automatic(header: str) -> None:
    assert event(classify(message(header))).type == REPLY


def test_references_keep_order_and_drop_duplicates_and_comments() -> None:
    found = event(
        classify(
            message(
                "In-Reply-To: <b@seller.example> (Sam's message of Tuesday)",
                "References: <a@seller.example>\n <b@seller.example>\t<c@seller.example>",
            )
        )
    )
    assert found.references == ("<b@seller.example>", "<a@seller.example>", "<c@seller.example>")
    assert (found.type, found.line, found.source) == (REPLY, 7, "test")


def test_a_reply_keeps_only_the_lowercased_sender_address() -> None:
    found = event(classify(message('From: "Lovelace, Ada" <Ada.L@Lead.EXAMPLE>')))
    assert found.email == "ada.l@lead.example"
    assert (found.diagnostic, found.message_id, found.url) == (None, None, None)


def test_a_message_with_no_link_and_no_sender_is_nothing_to_record() -> None:
    assert classify(message("From: -")) is None
    assert classify(message("From: undisclosed-recipients:;")) is None
    threaded = event(classify(message("From: -", f"In-Reply-To: {ABC}")))
    assert (threaded.email, threaded.references) == (None, (ABC,))


def test_a_reply_without_message_id_still_dedupes_by_content() -> None:
    raw = message("Message-ID: -", f"In-Reply-To: {ABC}")
    first, again = event(classify(raw)), event(classify(raw))
    assert first.provider_event_id is None
    assert first.dedupe_key() == again.dedupe_key()
    assert first.dedupe_key().startswith("mailbox:sha256:")


RECEIVED = (
    "Received: from mail.lead.example by mx.seller.example;\n Wed, 26 Nov 2025 12:34:56 +0100 (CET)"
)


@pytest.mark.parametrize(
    "date",
    ["-", "Wed, 26 Nov 2025 11:00:00", "Wed, 26 Nov 2025 11:00:00 -0000", "next Tuesday"],
)
def test_a_date_without_zone_falls_back_to_the_received_time(date: str) -> None:
    raw = message(f"Date: {date}", RECEIVED)
    assert event(classify(raw)).occurred_at == datetime(2025, 11, 26, 11, 34, 56, tzinfo=UTC)


def test_without_any_zoned_time_the_message_is_malformed() -> None:
    found = classify(message("Date: Wed, 26 Nov 2025 11:00:00"))
    assert isinstance(found, Malformed)
    assert (found.reason, found.line) == ("Date: missing or without zone, and no Received time", 7)


def dsn(*recipients: str, report_type: str = "delivery-status", original: str = "") -> bytes:
    blocks = "\n\n".join(["Reporting-MTA: dns; mx.seller.example", *recipients])
    report = (
        "Date: Wed, 26 Nov 2025 10:20:00 +0000\n"
        "From: MAILER-DAEMON@mx.seller.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Message-ID: <dsn@mx.seller.example>\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nIt failed. BODY-MARKER\n\n"
        f"--B\nContent-Type: message/delivery-status\n\n{blocks}\n\n"
    )
    if original:
        report += f"--B\nContent-Type: text/rfc822-headers\n\n{original}\n"
    return (report + "--B--\n").encode()


def recipient(address: str, action: str, status: str, diagnostic: str = "") -> str:
    block = f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}"
    return block + (f"\nDiagnostic-Code: smtp; {diagnostic}" if diagnostic else "")


ORIGINAL = "Message-ID: <ours@seller.example>\nSubject: Quick idea"


def test_a_dsn_reports_its_first_failed_recipient() -> None:
    found = event(
        classify(
            dsn(
                recipient("late@lead.example", "delayed", "4.4.1"),
                recipient("gone@lead.example", "failed", "5.1.1", "550 5.1.1 no such user"),
                original=ORIGINAL,
            )
        )
    )
    assert (found.email, found.bounce_kind) == ("gone@lead.example", HARD)
    assert (found.message_id, found.diagnostic) == (
        "<ours@seller.example>",
        "550 5.1.1 no such user",
    )
    assert found.provider_event_id == "<dsn@mx.seller.example>"


@pytest.mark.parametrize(
    ("action", "status", "kind", "diagnostic"),
    [
        ("failed", "4.4.7", SOFT, "4.4.7"),  # retries ran out on a temporary failure
        ("delayed", "4.2.2", SOFT, "4.2.2"),
        ("Failed", "5.7.1 (blocked)", HARD, "5.7.1 (blocked)"),
        ("failed", "", HARD, None),
    ],
)
def test_dsn_bounce_kinds(action: str, status: str, kind: BounceKind, diagnostic: str) -> None:
    found = event(classify(dsn(recipient("x@lead.example", action, status), original=ORIGINAL)))
    assert (found.type, found.bounce_kind, found.diagnostic) == (BOUNCE, kind, diagnostic)


def test_a_successful_delivery_report_is_nothing_to_record() -> None:
    assert classify(dsn(recipient("ada@lead.example", "delivered", "2.0.0"))) is None


UNREAD = (
    ": neither flufl.bounce nor the prose reader found a failed recipient or the Message-ID of"
    " ours it returns"
)


def test_a_dsn_without_actions_falls_back_to_the_prose_reader() -> None:
    # No Action, no Status: its failure subject makes it hard, as a plain bounce's does.
    found = event(classify(dsn("Final-Recipient: rfc822; ada@lead.example")))
    assert (found.type, found.email, found.bounce_kind) == (BOUNCE, "ada@lead.example", HARD)
    assert found.event_metadata()["bounceReader"] == "prose"


def test_a_mislabelled_status_part_is_still_read() -> None:
    raw = dsn(
        recipient("gone@lead.example", "failed", "5.1.1", "550 5.1.1 no such user"),
        original=ORIGINAL,
    ).replace(b"Content-Type: message/delivery-status", b"Content-Type: text/plain")
    found = event(classify(raw))
    assert (found.email, found.bounce_kind, found.message_id) == (
        "gone@lead.example",
        HARD,
        "<ours@seller.example>",
    )
    assert found.diagnostic == "550 5.1.1 no such user"
    assert found.bounce_reader in ("flufl.bounce", "prose")


def test_a_report_nobody_can_read_is_malformed_with_each_readers_reason() -> None:
    raw = dsn().replace(b"message/delivery-status", b"text/plain")
    found = classify(raw)
    assert isinstance(found, Malformed)
    assert found.reason == "multipart/report: no message/delivery-status part" + UNREAD


def test_an_action_with_a_comment_is_read() -> None:
    block = recipient("gone@lead.example", "failed (Bad destination mailbox address)", "5.1.1")
    found = event(classify(dsn(block, original=ORIGINAL)))
    assert (found.email, found.bounce_kind, found.bounce_reader) == (
        "gone@lead.example",
        HARD,
        "rfc3464",
    )


def test_the_original_recipient_is_the_address_we_sent_to() -> None:
    block = "Original-Recipient: rfc822; ada@lead.example\n" + recipient(
        "ada.lovelace@mail.lead.example", "failed", "5.1.1"
    )
    assert event(classify(dsn(block))).email == "ada@lead.example"


def test_read_receipts_are_nothing_to_record() -> None:
    raw = dsn(report_type="disposition-notification").replace(
        b"From: MAILER-DAEMON@mx.seller.example", b"From: ada@lead.example"
    )
    assert classify(raw) is None


@pytest.mark.parametrize(
    "headers",
    [
        ("From: postmaster@lead.example", "Subject: Delivery delayed: Quick idea"),
        ("From: MAILER-DAEMON@mx.lead.example", "Subject: failure notice"),
        ("From: MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@lead.example",),
    ],
)
def test_mail_from_a_bounce_writer_that_no_reader_understands_is_malformed(
    headers: tuple[str, ...],
) -> None:
    found = classify(message(*headers))
    assert isinstance(found, Malformed)
    sender = headers[0].removeprefix("From: ").partition("@")[0]
    assert (found.reason, found.line) == (f"mail from {sender.lower()}" + UNREAD, 7)


PROSE_BOUNCE = (
    "A message that you sent could not be delivered to one or more of its\n"
    "recipients. The following address(es) failed:\n\n"
    "  gone@lead.example\n    550 5.1.1 User unknown\n"
)


@pytest.mark.parametrize(
    "sender",
    ["MDaemon@mx.lead.example", "Symantec_AntiVirus_for_SMTP_Gateways@lead.example", "<>"],
)
def test_a_failure_notice_from_another_sender_is_a_bounce_when_flufl_bounce_reads_it(
    sender: str,
) -> None:
    raw = message(f"From: {sender}", "Subject: Delivery failure", body=PROSE_BOUNCE)
    found = event(classify(raw))
    assert (found.type, found.email, found.bounce_kind) == (BOUNCE, "gone@lead.example", HARD)


def test_a_flufl_bounce_detector_that_raises_leaves_the_message_to_the_others() -> None:
    # flufl.bounce 6.0.0's Yale detector raises IndexError on a message without From.
    raw = message("From: -", "Subject: Delivery failure", f"In-Reply-To: {ABC}", body=PROSE_BOUNCE)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert read_with_flufl(parsed) is None
    assert event(classify(raw)).type == REPLY


@pytest.mark.parametrize(
    "subject",
    ["Re: Undeliverable: Quick idea", "Fwd: Delivery failure", "Quick idea, failed?"],
)
def test_a_persons_message_about_a_failure_stays_a_reply(subject: str) -> None:
    raw = message(f"Subject: {subject}", f"In-Reply-To: {ABC}", body=PROSE_BOUNCE)
    assert event(classify(raw)).type == REPLY


def test_a_failure_subject_without_a_failed_address_stays_a_reply() -> None:
    raw = message("Subject: Delivery failure of our order", f"In-Reply-To: {ABC}")
    assert event(classify(raw)).type == REPLY
    # The prose reader's looser words do not turn a person's message into a bounce.
    words = "Failed to open it: file not found. Ask bob@elsewhere.example.\n"
    assert event(classify(message("Subject: Failed to open", body=words))).type == REPLY


def _name(suffix: str) -> str:
    return next(path.name for path in INBOX.glob(f"*/*.{suffix}"))


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under root with its mtime (a directory's changes when entries move) and bytes."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_mtime_ns,
            path.read_bytes() if path.is_file() else b"",
        )
        for path in sorted(root.rglob("*"))
    }
