"""A lane's decisions: lanes and groups, the message, verdicts and refusals as row updates."""

import random
from collections import deque
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses

import pytest

from core.campaigns.sending_rules import Mailbox, parse_sending_rules
from core.delivery.headers import MessageError
from core.delivery.lane import (
    BUSY_MAILBOX_DELAY,
    LaneSend,
    SendUpdate,
    handover_due,
    handover_guard,
    mailbox_lanes,
    next_group,
    outgoing_message,
    plan_updates,
    replan_refused,
    split_ungapped,
    unbuildable,
    verdict_update,
)
from core.delivery.plan import (
    RETRY_BASE,
    Action,
    Decision,
    DueSend,
    Usage,
    plan_deliveries,
    usage_days,
)
from core.delivery.report import DeliveryColumn, planned_sends
from core.delivery.transport import DeliveryResult, DeliveryVerdict
from core.delivery.unsubscribe import verify_token
from core.statuses import EmailSendStatus
from tests.unit.test_delivery_plan import NOW
from tests.unit.test_delivery_plan import RULES as PLAN_RULES
from tests.unit.test_delivery_plan import send as plan_send

RULES = PLAN_RULES | {
    "fromName": "Alex",
    "fromEmail": "Alex@Seller.example",
    "replyTo": "replies@seller.example",
}
GAPPED = RULES | {"minGapSeconds": 90}
SECRET = b"lane-test-secret-0123456789"
BASE_URL = "https://links.seller.example"


def send(i: int = 0, *, rules: dict | None = None, **fields) -> DueSend:
    lead = {"firstName": "Sarah", "lastName": "Lee", "body": "Hi Sarah"}
    return plan_send(i, rules=RULES if rules is None else rules, **(lead | fields))


def queued(s: DueSend, *, at: datetime | None = NOW, mailbox: str = "alex@seller.example"):
    box = Mailbox(email=mailbox)
    decision = Decision(s.sendId, Action.deliver, None, at, box)
    return LaneSend(s, decision, parse_sending_rules(s.sendingRules))


def result(verdict: DeliveryVerdict, detail: str = "250 OK") -> DeliveryResult:
    return DeliveryResult(verdict, detail)


# -- lanes and groups ----------------------------------------------------------------------------


def test_lanes_hold_the_sends_to_deliver_per_mailbox_in_plan_order():
    two = RULES | {
        "fromEmail": None,
        "mailboxes": [{"email": "a@x.example"}, {"email": "b@x.example"}],
    }
    sends = {s.sendId: s for s in [send(0, rules=two), send(1, rules=two), send(2, rules=two)]}
    a, b = Mailbox(email="A@x.example"), Mailbox(email="b@x.example")
    decisions = [
        Decision("s000", Action.deliver, None, NOW, a),
        Decision("s001", Action.defer, "mailbox gap (minGapSeconds)", NOW, b),
        Decision("s002", Action.deliver, None, NOW, a),
        Decision("s001", Action.cancel, "lead replied"),
    ]
    (lane,) = mailbox_lanes(sends, decisions)
    assert [q.send.sendId for q in lane] == ["s000", "s002"]
    assert lane[0].rules is lane[1].rules  # parsed once per campaign


def test_an_ungapped_mailbox_spreads_over_spare_connections_and_a_gapped_one_does_not():
    ungapped = [queued(send(i)) for i in range(5)]
    gapped = [queued(send(i, rules=GAPPED)) for i in range(5, 8)]
    queues = split_ungapped([ungapped, gapped], connections=4)
    assert [[q.send.sendId for q in queue] for queue in queues] == [
        ["s000", "s003"],
        ["s001", "s004"],
        ["s002"],
        ["s005", "s006", "s007"],
    ]
    assert split_ungapped([ungapped, gapped], connections=2) == [ungapped, gapped]


def test_a_group_is_one_campaigns_sends_due_now_up_to_its_size():
    later = NOW + timedelta(seconds=5)
    queue = deque(
        [
            queued(send(0)),
            queued(send(1)),
            queued(send(2, campaignId="c2")),
            queued(send(3, campaignId="c2")),
            queued(send(4, campaignId="c2"), at=later),
        ]
    )
    assert [q.send.sendId for q in next_group(queue, size=10, now=NOW)] == ["s000", "s001"]
    assert [q.send.sendId for q in next_group(queue, size=1, now=NOW)] == ["s002"]
    assert [q.send.sendId for q in next_group(queue, size=10, now=NOW)] == ["s003"]
    assert [q.send.sendId for q in next_group(queue, size=10, now=later)] == ["s004"]


def test_a_gapped_mailbox_hands_over_one_send_at_a_time():
    queue = deque([queued(send(i, rules=GAPPED)) for i in range(3)])
    assert len(next_group(queue, size=10, now=NOW)) == 1
    assert len(queue) == 2


def test_the_next_handover_waits_for_its_slot_and_the_gap_after_the_last():
    first = queued(send(0, rules=GAPPED), at=NOW + timedelta(seconds=10))
    assert handover_due(first, None, now=NOW) == NOW + timedelta(seconds=10)
    assert handover_due(first, NOW, now=NOW) == NOW + timedelta(seconds=90)
    unslotted = queued(send(1), at=None)
    assert handover_due(unslotted, NOW - timedelta(seconds=1), now=NOW) == NOW


# -- the message ---------------------------------------------------------------------------------


def message_of(s: DueSend, mailbox: Mailbox | None = None):
    rules = parse_sending_rules(s.sendingRules)
    box = mailbox or rules.sending_mailboxes()[0]
    return outgoing_message(s, rules, box, now=NOW, secret=SECRET, public_base_url=BASE_URL)


def test_the_message_carries_the_lead_the_sender_and_a_signed_unsubscribe_link():
    message = message_of(send(0))
    assert getaddresses(message.get_all("To")) == [("Sarah Lee", "lead0@buyer.example")]
    assert getaddresses(message.get_all("From")) == [("Alex", "Alex@seller.example")]
    assert message["Reply-To"] == "replies@seller.example"
    assert message["Message-ID"] == "<s000@seller.example>"
    assert message["Subject"] == "Hello" and "In-Reply-To" not in message
    web, _mailto = (part.strip(" <>") for part in message["List-Unsubscribe"].split(","))
    token = web.removeprefix(f"{BASE_URL}/unsubscribe/")
    assert verify_token(SECRET, token) == "s000"


def test_a_follow_up_threads_on_the_first_message_unless_the_campaign_turns_it_off():
    root = {"threadMessageId": "<root@seller.example>", "threadSubject": "Re: Re: Idea"}
    threaded = message_of(send(0, **root))
    assert threaded["Subject"] == "Re: Idea"
    assert threaded["In-Reply-To"] == "<root@seller.example>"
    assert threaded["References"] == "<root@seller.example>"
    flat = message_of(send(0, rules=RULES | {"threadFollowUps": False}, **root))
    assert flat["Subject"] == "Hello" and "In-Reply-To" not in flat


def test_a_mailbox_name_wins_over_the_campaigns_from_name():
    message = message_of(send(0), Mailbox(email="sam@seller.example", name="Sam"))
    assert getaddresses(message.get_all("From")) == [("Sam", "sam@seller.example")]


def test_a_message_that_cannot_be_built_fails_its_send():
    with pytest.raises(MessageError) as caught:
        message_of(send(0, toEmail="not an address"))
    update = unbuildable("s000", caught.value)
    assert (update.status, update.column) == (EmailSendStatus.failed, DeliveryColumn.failed)
    assert update.reason == update.report_reason == str(caught.value)
    assert update.reason.startswith("Lead.email")


def test_the_guard_checks_the_campaigns_day_and_limits_for_the_group():
    rules = RULES | {"timezone": "America/New_York", "dailyLimit": 30, "mailboxDailyLimit": 20}
    group = [queued(send(i, rules=rules), mailbox="Alex@Seller.example") for i in range(2)]
    guard = handover_guard(group, {"s000": "<a@x>", "s001": "<b@x>"}, now=NOW)
    assert guard.campaign_id == "c1" and guard.mailbox == "alex@seller.example"
    assert guard.sends == (("s000", "<a@x>"), ("s001", "<b@x>"))
    assert guard.day == datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # New York midnight
    assert (guard.campaign_limit, guard.mailbox_limit) == (30, 20)
    assert guard.min_gap == timedelta(0)
    own_cap = LaneSend(
        group[0].send,
        Decision("s000", Action.deliver, None, NOW, Mailbox(email="a@x.example", dailyLimit=7)),
        group[0].rules,
    )
    assert handover_guard([own_cap], {"s000": "<a@x>"}, now=NOW).mailbox_limit == 7


def test_the_guard_keeps_a_warm_up_cap_of_zero_from_the_plan():
    """A cap of 0 is a cap, not a missing one: the guard must not fall back to the rules'."""
    rules = RULES | {"mailboxDailyLimit": 20}
    first = queued(send(0, rules=rules))
    assert first.decision.mailbox is not None
    closed = LaneSend(
        first.send,
        Decision("s000", Action.deliver, None, NOW, first.decision.mailbox, 0),
        first.rules,
    )
    assert handover_guard([closed], {"s000": "<a@x>"}, now=NOW).mailbox_limit == 0


# -- verdicts ------------------------------------------------------------------------------------


def update_for(verdict: DeliveryVerdict, detail: str, *, attempts: int = 0) -> SendUpdate:
    return verdict_update(
        send(0, attempts=attempts),
        result(verdict, detail),
        now=NOW,
        max_attempts=3,
        rng=random.Random(1),
    )


def test_an_accepted_send_is_sent():
    assert update_for(DeliveryVerdict.accepted, "250 OK") == SendUpdate(
        "s000", EmailSendStatus.sent, DeliveryColumn.sent
    )


def test_a_transient_refusal_is_retried_with_backoff_until_the_last_attempt():
    retry = update_for(DeliveryVerdict.transient, "450 busy", attempts=1)
    assert (retry.status, retry.column) == (EmailSendStatus.scheduled, DeliveryColumn.retried)
    assert retry.reason == "attempt 2 refused, retrying: 450 busy"
    assert retry.report_reason == "450 busy"
    assert retry.at is not None
    assert NOW + 2 * RETRY_BASE * 0.8 <= retry.at <= NOW + 2 * RETRY_BASE * 1.2
    last = update_for(DeliveryVerdict.transient, "450 busy", attempts=2)
    assert (last.status, last.column) == (EmailSendStatus.failed, DeliveryColumn.failed)
    assert last.reason == last.report_reason == "gave up after 3 attempts: 450 busy"
    assert last.at is None


def test_a_rejection_fails_and_a_lost_reply_is_unknown():
    rejected = update_for(DeliveryVerdict.rejected, "554 5.7.1 spam")
    assert (rejected.status, rejected.column, rejected.reason) == (
        EmailSendStatus.failed,
        DeliveryColumn.failed,
        "554 5.7.1 spam",
    )
    unknown = update_for(DeliveryVerdict.ambiguous, "SMTPServerDisconnected")
    assert (unknown.status, unknown.column) == (EmailSendStatus.unknown, DeliveryColumn.unknown)
    assert (
        unknown.reason
        == unknown.report_reason
        == ("handed over, no final reply: SMTPServerDisconnected")
    )


def test_a_bounce_fails_the_send_in_the_bounced_column():
    bounced = update_for(DeliveryVerdict.bounced, "550 5.1.1 unknown")
    assert (bounced.status, bounced.column) == (EmailSendStatus.failed, DeliveryColumn.bounced)
    assert bounced.reason == "bounced: 550 5.1.1 unknown"
    assert bounced.report_reason == "550 5.1.1 unknown"


# -- settling the plan and refusals --------------------------------------------------------------


def test_the_plan_settles_what_does_not_go_now():
    box = Mailbox(email="Alex@Seller.example")
    later = NOW + timedelta(hours=1)
    decisions = [
        Decision("s0", Action.deliver, None, NOW, box),
        Decision("s1", Action.defer, "mailbox gap (minGapSeconds)", later, box),
        Decision("s2", Action.cancel, "lead replied", later),
        Decision("s3", Action.fail, "EmailSend has no generated message to send"),
    ]
    assert plan_updates(decisions) == [
        SendUpdate(
            "s1",
            EmailSendStatus.scheduled,
            DeliveryColumn.deferred,
            "mailbox gap (minGapSeconds)",
            at=later,
            mailbox="alex@seller.example",
        ),
        SendUpdate("s2", EmailSendStatus.cancelled, DeliveryColumn.cancelled, "lead replied"),
        SendUpdate(
            "s3",
            EmailSendStatus.failed,
            DeliveryColumn.failed,
            "EmailSend has no generated message to send",
        ),
    ]


def test_a_refusal_is_explained_by_a_fresh_plan():
    stopped = replan_refused(
        send(0, leadStatus="replied"), Usage(), last_try=False, now=NOW, rng=random.Random(1)
    )
    assert stopped is not None
    assert (stopped.action, stopped.reason) == (Action.cancel, "lead replied")


def test_a_refused_send_the_plan_lets_go_is_tried_once_more_then_waits():
    fresh = send(0)
    assert replan_refused(fresh, Usage(), last_try=False, now=NOW, rng=random.Random(1)) is None
    busy = replan_refused(fresh, Usage(), last_try=True, now=NOW, rng=random.Random(1))
    assert busy is not None
    assert (busy.action, busy.reason) == (Action.defer, "mailbox busy in another run")
    assert busy.at == NOW + BUSY_MAILBOX_DELAY
    assert busy.mailbox is not None and busy.mailbox.email == "Alex@seller.example"


def test_usage_days_are_each_campaigns_local_midnight_and_skip_unusable_rules():
    ny = RULES | {"timezone": "America/New_York", "fromEmail": "ny@seller.example"}
    sends = [
        send(0),
        send(1),
        send(2, campaignId="c2", rules=ny),
        send(3, campaignId="c3", rules={"timezone": "Nowhere/Else"}),
        send(4, campaignId="c4", rules={"timezone": "UTC"}),  # no sender
    ]
    days = usage_days(sends, NOW)
    utc_midnight = datetime(2026, 11, 25, tzinfo=UTC)
    ny_midnight = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
    assert days.campaigns == {"c1": utc_midnight, "c2": ny_midnight}
    assert days.mailboxes == {"alex@seller.example": utc_midnight, "ny@seller.example": ny_midnight}


def test_a_dry_run_lists_each_sends_fate():
    sends = [send(0), send(1, leadStatus="replied")]
    lines = planned_sends(
        plan_deliveries(sends, Usage(), now=NOW, deadline=NOW, rng=random.Random(1)), sends
    )
    assert [(p.send_id, p.campaign_id, p.action, p.reason) for p in lines] == [
        ("s000", "c1", "deliver", ""),
        ("s001", "c1", "cancel", "lead replied"),
    ]
    assert lines[0].mailbox == "Alex@seller.example" and lines[1].mailbox == "-"
    assert lines[0].at == NOW.isoformat() and lines[1].at == ""
