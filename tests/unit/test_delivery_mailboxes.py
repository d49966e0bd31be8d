"""Delivery per mailbox: a paused or disconnected `Mailbox` defers its sends, one whose inbox
could not be read its follow-ups, a lead already written to stays with its mailbox, the warm-up
cap is the mailbox's cap, and a lane's login or server failure gives its sends back."""

import random
import smtplib
import ssl
from datetime import timedelta

import pytest

from core.campaigns.sending_rules import parse_sending_rules
from core.delivery.accounts import MAILBOX_RECHECK, MailboxState
from core.delivery.lane import LaneSend, handover_guard, released
from core.delivery.plan import Action, MailboxUsage, Usage, plan_deliveries
from core.delivery.report import DeliveryColumn
from core.delivery.transport import account_error
from core.mailboxes.secrets import masked
from core.mailboxes.warmup import Warmup
from core.statuses import EmailSendStatus, MailboxStatus
from tests.unit.test_delivery_plan import NOW, RULES, send

ALEX, BOB = "alex@seller.example", "bob@seller.example"
TWO = {k: v for k, v in RULES.items() if k != "fromEmail"} | {
    "mailboxes": [{"email": ALEX}, {"email": BOB}],
    "mailboxDailyLimit": 100,
}
ACTIVE = MailboxState(MailboxStatus.active, None, 100)
PAUSED = MailboxState(MailboxStatus.paused, "bounces at 4%", 100)
DOWN = MailboxState(MailboxStatus.disconnected, "535 5.7.8 Authentication credentials invalid", 100)


def plan_with(sends, states, usage=None):

    return plan_deliveries(
        sends,
        usage or Usage(),
        now=NOW,
        deadline=NOW + timedelta(minutes=4),
        rng=random.Random(1),
        mailboxes={("w1", email): state for email, state in states.items()},
    )


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (PAUSED, "mailbox paused: bounces at 4%"),
        (DOWN, "mailbox disconnected: 535 5.7.8 Authentication credentials invalid"),
    ],
)
def test_a_paused_or_disconnected_mailbox_defers_its_sends_with_the_reason(state, reason):
    (decision,) = plan_with([send()], {ALEX: state})
    assert (decision.action, decision.reason) == (Action.defer, reason)
    assert decision.at == NOW + MAILBOX_RECHECK and decision.mailbox.email == ALEX


def test_a_lead_not_written_to_moves_to_an_active_mailbox():
    sends = [send(i, rules=TWO) for i in range(6)]
    decisions = plan_with(sends, {ALEX: DOWN, BOB: ACTIVE})
    assert {d.action for d in decisions} == {Action.deliver}
    assert {d.mailbox.email for d in decisions} == {BOB}
    # A mailbox chosen earlier (a deferral) but never used does not hold the lead either.
    (moved,) = plan_with([send(rules=TWO, mailbox=ALEX)], {ALEX: PAUSED, BOB: ACTIVE})
    assert (moved.action, moved.mailbox.email) == (Action.deliver, BOB)


def test_a_lead_already_written_to_stays_with_its_mailbox_and_waits():
    written = send(rules=TWO, mailbox=ALEX, threadMessageId="<first@seller.example>")
    (decision,) = plan_with([written], {ALEX: DOWN, BOB: ACTIVE})
    assert (decision.action, decision.mailbox.email) == (Action.defer, ALEX)
    assert decision.reason.startswith("mailbox disconnected: 535")
    (back,) = plan_with([written], {ALEX: ACTIVE, BOB: ACTIVE})
    assert (back.action, back.mailbox.email) == (Action.deliver, ALEX)


def test_an_inbox_not_read_holds_follow_ups_and_lets_first_emails_go():
    unread = MailboxState(MailboxStatus.active, None, 100, unread="imap.host=x:993: timed out")
    follow_up = send(1, rules=TWO, mailbox=ALEX, threadMessageId="<first@seller.example>")
    decisions = plan_with([send(0, rules=TWO), follow_up], {ALEX: unread, BOB: unread})
    first, held = decisions
    assert first.action is Action.deliver and first.at == NOW
    assert (held.action, held.mailbox.email, held.at) == (Action.defer, ALEX, NOW + MAILBOX_RECHECK)
    assert held.reason == "inbox not read for replies: imap.host=x:993: timed out"
    # Once the inbox is read, the same follow-up goes.
    (sent,) = plan_with([follow_up], {ALEX: ACTIVE})
    assert sent.action is Action.deliver


def test_when_no_mailbox_is_usable_every_send_waits():
    decisions = plan_with([send(i, rules=TWO) for i in range(4)], {ALEX: DOWN, BOB: PAUSED})
    assert {d.action for d in decisions} == {Action.defer}
    assert all(d.reason.startswith("mailbox ") for d in decisions)


def test_a_mailbox_without_a_row_keeps_the_sending_rules():
    rules = RULES | {"mailboxDailyLimit": 2}
    decisions = plan_with([send(i, rules=rules) for i in range(3)], {})
    assert [d.action for d in decisions] == [Action.deliver, Action.deliver, Action.defer]
    assert decisions[0].limit == 2 and decisions[2].reason == "mailbox daily limit (2) reached"


@pytest.mark.parametrize(("day", "cap"), [(0, 5), (1, 8), (2, 11), (5, 20), (20, 20)])
def test_the_warm_up_cap_limits_a_mailbox_over_simulated_days(day, cap):
    warmup = Warmup(daily_limit=20, started_at=NOW - timedelta(days=day, hours=1))
    state = MailboxState(MailboxStatus.active, None, warmup.cap(NOW))
    rules = RULES | {"mailboxDailyLimit": 50}  # the row's cap wins over the sendingRules'
    decisions = plan_with([send(i, rules=rules) for i in range(25)], {ALEX: state})
    delivered = [d for d in decisions if d.action is Action.deliver]
    assert len(delivered) == cap and {d.limit for d in delivered} == {cap}
    assert decisions[cap].reason == f"mailbox daily limit ({cap}) reached"
    # Handovers earlier today count against the same cap.
    usage = Usage(mailboxes={ALEX: MailboxUsage(today=cap - 1)})
    again = plan_with([send(i, rules=rules) for i in range(3)], {ALEX: state}, usage)
    assert [d.action for d in again] == [Action.deliver, Action.defer, Action.defer]


def test_the_handover_guard_checks_the_warm_up_cap():
    state = MailboxState(MailboxStatus.active, None, 7)
    (decision,) = plan_with([send()], {ALEX: state})
    queued = LaneSend(send(), decision, parse_sending_rules(RULES))
    guard = handover_guard([queued], {"s000": "<m@x>"}, now=NOW)
    assert guard.mailbox_limit == 7


def test_released_sends_are_scheduled_again_at_the_recheck_never_failed():
    reason = "mailbox disconnected: 535 5.7.8 no"
    updates = released([send(1), send(2)], reason, mailbox="Alex@Seller.example", now=NOW)
    assert [u.send_id for u in updates] == ["s001", "s002"]
    for update in updates:
        assert (update.status, update.column) == (
            EmailSendStatus.scheduled,
            DeliveryColumn.deferred,
        )
        assert update.reason == reason
        assert (update.at, update.mailbox) == (NOW + MAILBOX_RECHECK, ALEX)


@pytest.mark.parametrize(
    ("error", "down"),
    [
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"), True),
        (smtplib.SMTPAuthenticationError(534, b"5.7.9 Application-specific password"), True),
        (smtplib.SMTPResponseException(530, b"5.7.0 Authentication required"), True),
        (smtplib.SMTPResponseException(454, b"4.7.0 TLS not available"), False),
        (smtplib.SMTPResponseException(550, b"5.7.1 Relaying denied"), False),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported"), False),
        (ssl.SSLCertVerificationError("certificate verify failed"), False),
    ],
)
def test_only_a_refused_login_or_a_missing_server_takes_a_mailbox_down(error, down):
    assert account_error(error) is down


def test_an_answer_never_carries_the_password():
    assert masked("535 bad password hunter2", "hunter2") == "535 bad password ***"
    assert masked("535 no", None) == "535 no"
