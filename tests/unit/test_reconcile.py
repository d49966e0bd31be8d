"""Reconciling an unknown send: the verdict, why a send cannot be searched, the Sent folder."""

from datetime import UTC, datetime, timedelta

import pytest

from core.delivery.reconcile import (
    Outcome,
    ReconcileConfig,
    UnknownHandover,
    reconcile,
    unsearchable_reason,
)
from core.mailboxes.sent_folder import (
    Folder,
    choose_sent_folder,
    parse_internaldate,
    parse_list_line,
)
from core.settings import Settings
from core.statuses import EmailSendStatus

HANDOVER = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
GRACE = timedelta(seconds=900)
SEND = UnknownHandover(
    send_id="s1",
    campaign_id="c1",
    mailbox="alex@seller.example",
    message_id="<s1@seller.example>",
    attempted_at=HANDOVER,
    claim_token="t1",
)


def test_a_message_found_in_sent_is_sent_at_the_time_the_server_filed_it():
    filed = HANDOVER + timedelta(seconds=2)
    verdict = reconcile(
        SEND,
        filed,
        witness_filed=None,
        folder="Sent",
        now=HANDOVER + timedelta(hours=1),
        grace=GRACE,
    )
    assert (verdict.outcome, verdict.status, verdict.sent_at) == (
        Outcome.sent,
        EmailSendStatus.sent,
        filed,
    )
    assert "'Sent'" in verdict.reason


def test_found_wins_inside_the_grace_period_and_whatever_the_witness():
    verdict = reconcile(
        SEND, HANDOVER, witness_filed=False, folder="Sent", now=HANDOVER, grace=GRACE
    )
    assert verdict.status is EmailSendStatus.sent


def test_absent_past_the_grace_period_is_scheduled_again_with_no_sent_time():
    now = HANDOVER + GRACE
    verdict = reconcile(SEND, None, witness_filed=None, folder="Sent Items", now=now, grace=GRACE)
    assert (verdict.outcome, verdict.status, verdict.sent_at) == (
        Outcome.rescheduled,
        EmailSendStatus.scheduled,
        None,
    )
    assert "900 s after the handover" in verdict.reason
    assert "same Message-ID" in verdict.reason


def test_absent_inside_the_grace_period_stays_unknown():
    now = HANDOVER + GRACE - timedelta(seconds=1)
    verdict = reconcile(SEND, None, witness_filed=None, folder="Sent", now=now, grace=GRACE)
    assert (verdict.outcome, verdict.status) == (Outcome.waiting, EmailSendStatus.unknown)


def test_a_grace_of_zero_reschedules_at_once():
    verdict = reconcile(
        SEND, None, witness_filed=True, folder="Sent", now=HANDOVER, grace=timedelta(0)
    )
    assert verdict.outcome is Outcome.rescheduled


def test_absent_from_a_folder_that_lacks_an_earlier_send_too_stays_unknown():
    """A server that does not file what it sends: its folder's silence proves nothing."""
    send = SEND.model_copy(update={"witness": "<s0@seller.example>"})
    now = HANDOVER + GRACE * 10
    verdict = reconcile(send, None, witness_filed=False, folder="Sent", now=now, grace=GRACE)
    assert (verdict.outcome, verdict.status) == (Outcome.unproven, EmailSendStatus.unknown)
    assert "<s0@seller.example>" in verdict.reason


def test_absent_from_a_folder_that_holds_the_earlier_send_is_scheduled_again():
    now = HANDOVER + GRACE
    verdict = reconcile(SEND, None, witness_filed=True, folder="Sent", now=now, grace=GRACE)
    assert verdict.outcome is Outcome.rescheduled


@pytest.mark.parametrize(
    ("mailbox", "has_row", "has_imap", "complete", "why"),
    [
        (None, False, False, True, "no sending mailbox"),
        ("a@x.example", False, False, True, "no Mailbox row"),
        ("a@x.example", True, False, True, "no IMAP login"),
        ("a@x.example", True, True, False, "no Message-ID"),
        ("a@x.example", True, True, True, None),
    ],
)
def test_a_send_without_a_mailbox_with_imap_is_left_for_the_operator(
    mailbox, has_row, has_imap, complete, why
):
    reason = unsearchable_reason(
        mailbox=mailbox, has_row=has_row, has_imap=has_imap, complete=complete
    )
    assert reason == why if why is None else why in reason


def test_the_config_reads_the_grace_period_and_the_new_handover_default():
    settings = Settings.model_validate({"reconcile_grace_seconds": 60})
    assert ReconcileConfig.from_settings(settings).grace_seconds == 60
    defaults = Settings.model_fields
    assert defaults["reconcile_grace_seconds"].default == 900
    assert defaults["delivery_handover_group"].default == 1


@pytest.mark.parametrize(
    ("item", "name", "attributes"),
    [
        (b'(\\HasNoChildren \\Sent) "/" "Sent Items"', "Sent Items", {"\\hasnochildren", "\\sent"}),
        (b'(\\HasNoChildren) "." INBOX.Sent', "INBOX.Sent", {"\\hasnochildren"}),
        (b'(\\Noselect) NIL ""', "", {"\\noselect"}),
        (b'(\\Sent) "/" "say \\"hi\\""', 'say "hi"', {"\\sent"}),
        ((b'(\\Sent) "/" {14}', b"Gesendet/2026"), "Gesendet/2026", {"\\sent"}),
    ],
)
def test_list_lines_give_the_name_as_the_server_spells_it(item, name, attributes):
    assert parse_list_line(item) == Folder(name=name, attributes=frozenset(attributes))


def test_a_line_that_is_not_a_list_answer_is_ignored():
    assert parse_list_line(b"garbage") is None


def _folders(*entries: tuple[str, str]) -> list[Folder]:
    return [
        Folder(name=name, attributes=frozenset(attrs.lower().split())) for name, attrs in entries
    ]


def test_the_special_use_sent_folder_wins_over_the_usual_names():
    folders = _folders(("INBOX", ""), ("Sent", ""), ("Gesendete Objekte", "\\HasNoChildren \\Sent"))
    assert choose_sent_folder(folders) == "Gesendete Objekte"


def test_a_sent_folder_that_cannot_be_selected_is_passed_over():
    folders = _folders(("[Gmail]", "\\Noselect \\Sent"), ("[Gmail]/Sent Mail", ""))
    assert choose_sent_folder(folders) == "[Gmail]/Sent Mail"


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["INBOX", "sent items", "Sent Messages"], "sent items"),
        (["INBOX", "Sent Messages", "[Gmail]/Sent Mail"], "[Gmail]/Sent Mail"),
        (["INBOX", "Sent Messages", "SENT"], "SENT"),
        (["INBOX", "Drafts"], None),
    ],
)
def test_without_special_use_the_usual_names_are_tried_in_order(names, chosen):
    assert choose_sent_folder(_folders(*((name, "") for name in names))) == chosen


def test_internaldate_is_read_as_utc():
    assert parse_internaldate(b" 4-Dec-2026 11:30:05 +0100") == datetime(
        2026, 12, 4, 10, 30, 5, tzinfo=UTC
    )
