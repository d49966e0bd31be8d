"""A delivery lane's decisions: which sends go together, each send's message, and what a verdict
or a refused handover makes of a send (its new status, its report column, its backoff).

A lane delivers one sending mailbox's sends in slot order; tasks.delivery_lane sequences its
I/O (handovers, transport calls, commits) and asks these plain functions what to do.
"""

import random
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from core.campaigns.sending_rules import Mailbox, SendingRules, parse_sending_rules
from core.delivery.accounts import MAILBOX_RECHECK, MailboxStates
from core.delivery.headers import MessageError
from core.delivery.message import OutgoingEmail, build_message, message_id_for, thread_subject
from core.delivery.plan import (
    Action,
    Decision,
    DueSend,
    Usage,
    local_day_start,
    mailbox_cap,
    plan_deliveries,
    retry_at,
)
from core.delivery.report import DeliveryColumn
from core.delivery.transport import DeliveryResult, DeliveryVerdict
from core.delivery.unsubscribe import sign_token, unsubscribe_mailto, unsubscribe_url
from core.statuses import EmailSendStatus

# A send the guard refused although its re-plan says it may go (another run used the mailbox
# meanwhile) waits this long rather than racing that run again.
BUSY_MAILBOX_DELAY = timedelta(seconds=60)

# What the plan's verdict on a send that does not go now writes, and where the report counts it.
_SETTLED: dict[Action, tuple[EmailSendStatus, DeliveryColumn]] = {
    Action.defer: (EmailSendStatus.scheduled, DeliveryColumn.deferred),
    Action.cancel: (EmailSendStatus.cancelled, DeliveryColumn.cancelled),
    Action.fail: (EmailSendStatus.failed, DeliveryColumn.failed),
}


@dataclass
class LaneSend:
    """A send queued in a lane, with its plan decision and its campaign's rules."""

    send: DueSend
    decision: Decision
    rules: SendingRules
    retried: bool = False  # refused once and tried again alone: the next refusal settles it


@dataclass(frozen=True)
class HandoverGuard:
    """What the handover guard checks and commits for a group of one campaign's sends from one
    mailbox, in slot order: each send's Message-ID, the day and the limits."""

    campaign_id: str
    mailbox: str
    sends: tuple[tuple[str, str], ...]  # (send id, Message-ID)
    day: datetime  # local midnight in the campaign's zone: both caps count from it
    mailbox_limit: int
    campaign_limit: int
    min_gap: timedelta


@dataclass(frozen=True)
class SendUpdate:
    """What a send's row becomes, and the run report's column (and reason) for it."""

    send_id: str
    status: EmailSendStatus
    column: DeliveryColumn
    reason: str | None = None  # the row's statusReason
    short_reason: str | None = None  # the report's reason, when shorter than the row's
    at: datetime | None = None  # the row's new scheduledFor: a retry's or a deferral's
    mailbox: str | None = None  # the mailbox a deferred send keeps

    @property
    def report_reason(self) -> str | None:
        """Why, as the run report counts it."""
        return self.reason if self.short_reason is None else self.short_reason


def mailbox_lanes(sends: dict[str, DueSend], decisions: list[Decision]) -> list[list[LaneSend]]:
    """The sends to deliver now, one lane per sending mailbox, each in plan order."""
    lanes: dict[str, list[LaneSend]] = defaultdict(list)
    rules_of: dict[str, SendingRules] = {}
    for decision in decisions:
        if decision.action is Action.deliver and decision.mailbox is not None:
            send = sends[decision.send_id]
            if send.campaignId not in rules_of:
                rules_of[send.campaignId] = parse_sending_rules(send.sendingRules)
            lane = lanes[decision.mailbox.email.lower()]
            lane.append(LaneSend(send, decision, rules_of[send.campaignId]))
    return list(lanes.values())


def split_ungapped(lanes: list[list[LaneSend]], connections: int) -> list[list[LaneSend]]:
    """Spread a mailbox without gaps over spare connections; a gapped mailbox stays one lane.

    A gap orders a mailbox's sends one after another, but without one nothing does, and the
    round trips of one connection (the commit before each handover, the SMTP dialogue) are
    what limit a lone mailbox.
    """
    spare = max(connections - len(lanes), 0)
    queues: list[list[LaneSend]] = []
    for lane in lanes:
        rules = lane[0].rules
        if spare and rules.min_gap_seconds == 0 and rules.jitter_seconds == 0 and len(lane) > 1:
            ways = min(spare + 1, len(lane))
            spare -= ways - 1
            queues.extend(lane[i::ways] for i in range(ways))
        else:
            queues.append(lane)
    return queues


def handover_due(first: LaneSend, last_handover: datetime | None, *, now: datetime) -> datetime:
    """When the lane's next send may be handed over: its slot, and the gap after the last one."""
    due = first.decision.at or now
    if last_handover is not None:
        due = max(due, last_handover + timedelta(seconds=first.rules.min_gap_seconds))
    return due


def next_group(queue: deque[LaneSend], *, size: int, now: datetime) -> list[LaneSend]:
    """Take the next sends to hand over together: due now, of one campaign, with no gap."""
    group = [queue.popleft()]
    if group[0].rules.min_gap_seconds or group[0].rules.jitter_seconds:
        return group
    while (
        queue
        and len(group) < size
        and queue[0].send.campaignId == group[0].send.campaignId
        and (queue[0].decision.at is None or queue[0].decision.at <= now)
    ):
        group.append(queue.popleft())
    return group


def outgoing_message(
    send: DueSend,
    rules: SendingRules,
    mailbox: Mailbox,
    *,
    now: datetime,
    secret: bytes,
    public_base_url: str,
) -> EmailMessage:
    """The message of a send, threaded on the lead's first one; raises MessageError."""
    assert send.subject is not None and send.body is not None  # the plan fails sends without
    token = sign_token(secret, send.sendId)
    thread = rules.thread_follow_ups and send.threadMessageId is not None
    subject = send.subject
    if thread and send.threadSubject:
        subject = thread_subject(send.threadSubject)
    name = " ".join(part for part in (send.firstName, send.lastName) if part) or None
    return build_message(
        OutgoingEmail(
            send_id=send.sendId,
            from_email=mailbox.email,
            from_name=mailbox.name or rules.from_name,
            reply_to=rules.reply_to,
            to_email=send.toEmail,
            to_name=name,
            subject=subject,
            text_body=send.body,
            html=rules.html_body,
            date=now,
            message_id=message_id_for(send.sendId, mailbox.email),
            in_reply_to=send.threadMessageId if thread else None,
            references=(send.threadMessageId,) if thread and send.threadMessageId else (),
            unsubscribe_url=unsubscribe_url(public_base_url, token),
            unsubscribe_mailto=unsubscribe_mailto(mailbox.email, token),
        )
    )


def handover_guard(
    group: list[LaneSend], message_ids: dict[str, str], *, now: datetime
) -> HandoverGuard:
    """The guard of a group (one campaign, one mailbox) whose messages were built."""
    first = group[0]
    rules, mailbox = first.rules, first.decision.mailbox
    assert mailbox is not None  # a lane only holds sends the plan gave a mailbox
    return HandoverGuard(
        campaign_id=first.send.campaignId,
        mailbox=mailbox.email.lower(),
        sends=tuple((s.send.sendId, message_ids[s.send.sendId]) for s in group),
        day=local_day_start(now, ZoneInfo(rules.timezone)),
        mailbox_limit=(
            mailbox_cap(mailbox, rules, None)
            if first.decision.limit is None
            else first.decision.limit
        ),
        campaign_limit=rules.daily_limit,
        min_gap=timedelta(seconds=rules.min_gap_seconds),
    )


def unbuildable(send_id: str, error: MessageError) -> SendUpdate:
    """A send whose message cannot be built fails, with the field that stopped it."""
    return SendUpdate(send_id, EmailSendStatus.failed, DeliveryColumn.failed, str(error))


def verdict_update(
    send: DueSend,
    result: DeliveryResult,
    *,
    now: datetime,
    max_attempts: int,
    rng: random.Random,
) -> SendUpdate:
    """What a transport's verdict makes of a send; a bounce also stops its address."""
    detail, attempt = result.detail, send.attempts + 1
    sent, failed = EmailSendStatus.sent, EmailSendStatus.failed
    match result.verdict:
        case DeliveryVerdict.accepted:
            return SendUpdate(send.sendId, sent, DeliveryColumn.sent)
        case DeliveryVerdict.transient if attempt >= max_attempts:
            reason = f"gave up after {attempt} attempts: {detail}"
            return SendUpdate(send.sendId, failed, DeliveryColumn.failed, reason)
        case DeliveryVerdict.transient:
            return SendUpdate(
                send.sendId,
                EmailSendStatus.scheduled,
                DeliveryColumn.retried,
                f"attempt {attempt} refused, retrying: {detail}",
                short_reason=detail,
                at=retry_at(now, attempt, rng),
            )
        case DeliveryVerdict.rejected:
            return SendUpdate(send.sendId, failed, DeliveryColumn.failed, detail)
        case DeliveryVerdict.ambiguous:
            reason = f"handed over, no final reply: {detail}"
            return SendUpdate(send.sendId, EmailSendStatus.unknown, DeliveryColumn.unknown, reason)
        case DeliveryVerdict.bounced:
            return SendUpdate(
                send.sendId, failed, DeliveryColumn.bounced, f"bounced: {detail}", detail
            )


def plan_updates(decisions: list[Decision]) -> list[SendUpdate]:
    """The rows of the sends the plan keeps from going now: deferred, cancelled or failed."""
    updates = []
    for decision in decisions:
        if decision.action is Action.deliver:
            continue
        status, column = _SETTLED[decision.action]
        updates.append(
            SendUpdate(
                decision.send_id,
                status,
                column,
                decision.reason,
                at=decision.at if decision.action is Action.defer else None,
                mailbox=decision.mailbox.email.lower() if decision.mailbox else None,
            )
        )
    return updates


def released(sends: list[DueSend], reason: str, *, mailbox: str, now: datetime) -> list[SendUpdate]:
    """The sends a lane gives back when its mailbox stopped (disconnected, or paused by its
    circuit breaker), `reason` saying why: `scheduled` again at the recheck, never failed, on the
    same mailbox."""
    return [
        SendUpdate(
            send.sendId,
            EmailSendStatus.scheduled,
            DeliveryColumn.deferred,
            reason,
            at=now + MAILBOX_RECHECK,
            mailbox=mailbox.lower(),
        )
        for send in sends
    ]


def replan_refused(
    fresh: DueSend,
    usage: Usage,
    *,
    last_try: bool,
    now: datetime,
    rng: random.Random,
    mailboxes: MailboxStates | None = None,
) -> Decision | None:
    """Why the guard refused a send, as a decision to write; None when it may go after all.

    The guard refuses what the plan allowed when the day's counters were missing (a batch that
    crossed midnight: they exist now, so the send is tried once more, alone) or when another run
    used the mailbox meanwhile (the send then waits a little).
    """
    plan = plan_deliveries([fresh], usage, now=now, deadline=now, rng=rng, mailboxes=mailboxes)
    decision = plan[0]
    if decision.action is not Action.deliver:
        return decision
    if not last_try:
        return None
    return Decision(
        fresh.sendId,
        Action.defer,
        "mailbox busy in another run",
        now + BUSY_MAILBOX_DELAY,
        decision.mailbox,
    )
