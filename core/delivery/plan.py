"""Deciding each claimed send's fate: deliver now (at which moment, from which mailbox), defer to
the next allowed moment, cancel because the lead stopped, or fail because it cannot be sent.

Plain functions over plain data, so every rule (stops, windows, caps, gaps, backoff) is tested
without a database, an SMTP server or Prefect.
"""

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from core.campaigns.closed_days import closed_days
from core.campaigns.schedule import lead_zone, next_opening
from core.campaigns.sending_rules import Mailbox, SendingRules, describe_errors, parse_sending_rules
from core.delivery.accounts import MAILBOX_RECHECK, MailboxState, MailboxStates, mailbox_key
from core.statuses import CampaignLeadStatus, CampaignStatus, GeneratedMessageStatus

# A lead in one of these has stopped: its pending sends are cancelled, never delivered.
STOPPED_LEADS = frozenset(
    {
        CampaignLeadStatus.replied,
        CampaignLeadStatus.bounced,
        CampaignLeadStatus.unsubscribed,
        CampaignLeadStatus.stopped,
    }
)
# A campaign that ended cancels its pending sends; a paused one only holds them.
ENDED_CAMPAIGNS = frozenset(
    {CampaignStatus.completed, CampaignStatus.archived, CampaignStatus.draft}
)
# A message a person put back into review or rejected is never delivered; its send waits. A
# draft written ahead has no send until its lead's generation run adopts it: one that somehow
# got one is held too, since only that run checks it still fits the lead.
UNAPPROVED_MESSAGES = frozenset(
    {
        GeneratedMessageStatus.pending_review,
        GeneratedMessageStatus.rejected,
        GeneratedMessageStatus.pregenerated,
    }
)
PAUSE_RECHECK = timedelta(hours=1)
RETRY_BASE = timedelta(minutes=5)
RETRY_CAP = timedelta(hours=4)


class DueSend(BaseModel):
    """A claimed `EmailSend` with everything its delivery decision and message need."""

    sendId: str
    campaignId: str
    campaignLeadId: str | None
    leadId: str
    workspaceId: str
    stepOrder: int | None
    toEmail: str
    firstName: str | None = None
    lastName: str | None = None
    leadTimezone: str | None = None
    leadCountry: Any = None  # customFields.country as the web app stored it, checked when used
    subject: str | None = None
    body: str | None = None
    messageStatus: str | None = None  # a person may put it back into review or reject it
    scheduledFor: datetime
    attempts: int = 0
    mailbox: str | None = None  # this lead's mailbox in this campaign, once one was chosen
    leadStatus: str | None = None
    campaignStatus: str
    campaignStatusReason: str | None = None  # why it was paused: a breaker's figures, say
    suppressed: bool = False
    companyReplied: bool = False
    sendingRules: dict[str, Any] = {}
    threadMessageId: str | None = None  # the lead's first message in this campaign
    threadSubject: str | None = None


class Action(StrEnum):
    deliver = "deliver"
    defer = "defer"
    cancel = "cancel"
    fail = "fail"


@dataclass(frozen=True)
class Decision:
    """What happens to one send; `at` is the delivery slot or the deferred `scheduledFor`."""

    send_id: str
    action: Action
    reason: str | None = None
    at: datetime | None = None
    mailbox: Mailbox | None = None
    limit: int | None = None  # a delivery's mailbox cap today (the warm-up cap of a `Mailbox` row)


@dataclass
class MailboxUsage:
    """A mailbox's handovers today (in the campaign's zone) and its latest handover."""

    today: int = 0
    last_attempt: datetime | None = None


@dataclass
class Usage:
    """Today's counts at plan time; the plan adds its own deliveries as it allocates them."""

    campaigns: dict[str, int] = field(default_factory=dict)
    mailboxes: dict[str, MailboxUsage] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageDays:
    """The local midnight each campaign's and each sending mailbox's daily counters start from."""

    campaigns: dict[str, datetime]
    mailboxes: dict[str, datetime]


def usage_days(sends: list[DueSend], now: datetime) -> UsageDays:
    """The days whose counters a plan of `sends` needs; campaigns with unusable rules have none."""
    return campaign_days({send.campaignId: send.sendingRules for send in sends}, now)


def campaign_days(sending_rules: Mapping[str, object], now: datetime) -> UsageDays:
    """The days of each campaign's counters, and of its mailboxes', by its raw sendingRules.

    A mailbox shared by campaigns in different zones counts from the first campaign's midnight.
    """
    campaigns: dict[str, datetime] = {}
    mailboxes: dict[str, datetime] = {}
    for campaign_id, raw in sending_rules.items():
        if delivery_rules_problem(raw) is not None:
            continue
        rules = parse_sending_rules(raw)
        day = local_day_start(now, ZoneInfo(rules.timezone))
        campaigns[campaign_id] = day
        for mailbox in rules.sending_mailboxes():
            mailboxes.setdefault(mailbox.email.lower(), day)
    return UsageDays(campaigns, mailboxes)


def delivery_rules_problem(raw: object) -> str | None:
    """Why a campaign's sendingRules stop all its deliveries, or None when they are usable."""
    try:
        rules = parse_sending_rules(raw)
    except ValidationError as exc:
        return "sendingRules invalid: " + "; ".join(describe_errors(exc))
    if not rules.sending_mailboxes():
        return "sendingRules has no sender: set fromEmail or mailboxes"
    return None


def local_day_start(at: datetime, zone: ZoneInfo) -> datetime:
    """Midnight of at's local day in zone, in UTC; daily caps count from here."""
    local = at.astimezone(zone)
    return datetime.combine(local.date(), time(0), tzinfo=zone).astimezone(UTC)


def next_local_day(at: datetime, zone: ZoneInfo) -> datetime:
    """Midnight starting the local day after at's, in UTC (23 or 25 hours away across DST)."""
    local = at.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def choose_mailbox(
    send: DueSend, rules: SendingRules, usage: Usage, mailboxes: MailboxStates | None = None
) -> Mailbox:
    """The lead's mailbox: the one that already wrote to it (thread continuity), else the one
    chosen before if usable, else the least used usable one today (stable ties).

    When no mailbox is usable (paused, disconnected), the least used one is returned and the
    plan defers the send with its status.
    """
    candidates = rules.sending_mailboxes()
    states = mailboxes or {}

    def usable(mailbox: Mailbox) -> bool:
        state = states.get(mailbox_key(send.workspaceId, mailbox.email))
        return state is None or state.usable

    if send.mailbox:
        for mailbox in candidates:
            if mailbox.email.lower() == send.mailbox.lower() and (
                send.threadMessageId is not None or usable(mailbox)
            ):
                return mailbox

    def load(mailbox: Mailbox) -> tuple[int, str]:
        used = usage.mailboxes.get(mailbox.email.lower(), MailboxUsage()).today
        tie = hashlib.sha256(f"{send.campaignLeadId}:{mailbox.email}".encode()).hexdigest()
        return used, tie

    return min([m for m in candidates if usable(m)] or candidates, key=load)


def mailbox_cap(mailbox: Mailbox, rules: SendingRules, state: MailboxState | None) -> int:
    """A mailbox's cap today: its row's warm-up cap, else its own dailyLimit in the
    sendingRules, else the rules' mailboxDailyLimit."""
    return state.cap if state is not None else mailbox.daily_limit or rules.mailbox_daily_limit


def stop_reason(send: DueSend, rules: SendingRules) -> str | None:
    """Why this send must never go out, or None: checked at plan time and again at handover."""
    if send.leadStatus in STOPPED_LEADS:
        return f"lead {send.leadStatus}"
    if send.suppressed:
        return "address is on the workspace's suppression list"
    if send.campaignStatus in ENDED_CAMPAIGNS:
        return f"campaign {send.campaignStatus}"
    if rules.stop_on_company_reply and send.companyReplied:
        return "another lead at the same company replied (stopOnCompanyReply)"
    return None


def hold_reason(send: DueSend) -> str | None:
    """Why this send waits without being cancelled (a pause, a message not approved), or None."""
    if send.messageStatus in UNAPPROVED_MESSAGES:
        return f"message {send.messageStatus} (review before send)"
    if send.leadStatus == CampaignLeadStatus.paused:
        return "lead paused"
    if send.campaignStatus == CampaignStatus.paused:
        why = send.campaignStatusReason
        return "campaign paused" + (f": {why}" if why else "")
    return None


def plan_deliveries(
    sends: list[DueSend],
    usage: Usage,
    *,
    now: datetime,
    deadline: datetime,
    rng: random.Random,
    mailboxes: MailboxStates | None = None,
) -> list[Decision]:
    """Decide every send of a batch, oldest first, allocating caps and mailbox gaps as it goes.

    Deliveries get a slot between now and deadline: the earliest moment the mailbox's gap
    (minGapSeconds plus 0..jitterSeconds) allows, inside the lead's window. A send that cannot
    go out by the deadline is deferred to the moment it can, never dropped, never earlier than
    its scheduledFor. `mailboxes` holds the sending mailboxes that have a `Mailbox` row: a
    paused or disconnected one defers its sends, one whose inbox could not be read defers its
    follow-ups, and its cap is the warm-up cap.
    """
    decisions = []
    next_free: dict[str, datetime] = {}
    # Validated once per campaign, not once per send: a batch is mostly one or two campaigns.
    rules_of: dict[str, SendingRules | str] = {}
    for send in sorted(sends, key=lambda s: (s.scheduledFor, s.sendId)):
        if send.campaignId not in rules_of:
            problem = delivery_rules_problem(send.sendingRules)
            rules_of[send.campaignId] = problem or parse_sending_rules(send.sendingRules)
        rules = rules_of[send.campaignId]
        if isinstance(rules, str):
            decisions.append(Decision(send.sendId, Action.defer, rules, now + PAUSE_RECHECK))
            continue
        decisions.append(
            _decide(
                send, rules, usage, next_free, mailboxes or {}, now=now, deadline=deadline, rng=rng
            )
        )
    return decisions


def _decide(
    send: DueSend,
    rules: SendingRules,
    usage: Usage,
    next_free: dict[str, datetime],
    mailboxes: MailboxStates,
    *,
    now: datetime,
    deadline: datetime,
    rng: random.Random,
) -> Decision:
    if not send.subject or not send.body:
        return Decision(send.sendId, Action.fail, "EmailSend has no generated message to send")
    stop = stop_reason(send, rules)
    if stop is not None:
        return Decision(send.sendId, Action.cancel, stop)
    hold = hold_reason(send)
    if hold is not None:
        return Decision(send.sendId, Action.defer, hold, now + PAUSE_RECHECK)

    zone = lead_zone(send.leadTimezone, rules)
    closed = closed_days(rules, send.leadCountry, send.leadTimezone)
    campaign_zone = ZoneInfo(rules.timezone)
    mailbox = choose_mailbox(send, rules, usage, mailboxes)
    key = mailbox.email.lower()
    state = mailboxes.get(mailbox_key(send.workspaceId, key))
    if state is not None and not state.usable:
        return Decision(
            send.sendId, Action.defer, state.hold_reason, now + MAILBOX_RECHECK, mailbox
        )
    if state is not None and state.unread is not None and send.threadMessageId is not None:
        # The lead was written to, so its answer may sit unread in this mailbox (property 16).
        return Decision(
            send.sendId, Action.defer, state.unread_reason, now + MAILBOX_RECHECK, mailbox
        )
    box = usage.mailboxes.setdefault(key, MailboxUsage())
    earliest = max(now, send.scheduledFor)

    if usage.campaigns.get(send.campaignId, 0) >= rules.daily_limit:
        reopen = next_opening(next_local_day(now, campaign_zone), rules.window, zone, closed).at
        return Decision(
            send.sendId, Action.defer, f"campaign daily limit ({rules.daily_limit}) reached", reopen
        )
    limit = mailbox_cap(mailbox, rules, state)
    if box.today >= limit:
        reopen = next_opening(next_local_day(now, campaign_zone), rules.window, zone, closed).at
        return Decision(
            send.sendId, Action.defer, f"mailbox daily limit ({limit}) reached", reopen, mailbox
        )

    gap = timedelta(seconds=rules.min_gap_seconds + rng.uniform(0, rules.jitter_seconds))
    if key not in next_free:
        # Without a gap the last handover constrains nothing: another run may have stamped it a
        # moment after this plan's `now`, which must not defer the mailbox's sends past the run.
        next_free[key] = box.last_attempt + gap if box.last_attempt and gap else earliest
    wanted = max(earliest, next_free[key])
    opening = next_opening(wanted, rules.window, zone, closed)
    slot = opening.at
    if slot > max(deadline, now):
        if slot > wanted:
            # A closed window in this lead's zone must not hold the mailbox for other leads.
            why = opening.reason or "outside the sending window"
            return Decision(send.sendId, Action.defer, why, slot, mailbox)
        # The slot stays reserved, so the sends deferred behind it keep their gaps too.
        next_free[key] = slot + gap
        return Decision(send.sendId, Action.defer, "mailbox gap (minGapSeconds)", slot, mailbox)
    next_free[key] = slot + gap
    box.today += 1
    box.last_attempt = slot
    usage.campaigns[send.campaignId] = usage.campaigns.get(send.campaignId, 0) + 1
    return Decision(send.sendId, Action.deliver, None, slot, mailbox, limit)


def retry_at(now: datetime, attempts: int, rng: random.Random) -> datetime:
    """When a send refused with a 4xx is tried again: 5 min doubling to 4 h, with ±20% jitter."""
    doubling: int = 2 ** max(attempts - 1, 0)  # int ** int is typed Any (it may be a float)
    delay = min(RETRY_BASE * doubling, RETRY_CAP)
    return now + delay * rng.uniform(0.8, 1.2)
