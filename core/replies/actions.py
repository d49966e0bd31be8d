"""What each classified reply does to its lead, decided in plain code.

| intent | action |
| --- | --- |
| interested, meeting_request, not_interested | stop `replied`, `stopReason` the intent |
| out_of_office, not_now | not stopped: the pending follow-up waits for `resume_at` |
| referral | the referred address enrolled at step 1; the referrer stops (`referral`) |
| unsubscribe | the unsubscribe link's operation: suppressed, `unsubscribed`, sends cancelled |
| auto_reply | recorded only, as an auto-reply always was |
| other, or confidence below the threshold | as before: a reply stops (`replied`) |
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from core.campaigns.closed_days import closed_days
from core.campaigns.lead_fields import LeadRow, normalise_email
from core.campaigns.schedule import lead_zone, next_opening
from core.campaigns.sending_rules import SendingRules, parse_sending_rules
from core.replies.intent import Intent, ReplyIntent
from core.replies.reply_text import ADDRESS_RE
from core.statuses import EngagementType

# The stop reason of a reply that gets no more specific one, as before classification.
REPLIED = "replied"
REFERRAL = "referral"


class ReplyAction(StrEnum):
    """What a classified reply did; kept on its ReplyClassification row."""

    stopped = "stopped"  # the lead stops as `replied`
    rescheduled = "rescheduled"  # the lead's follow-up waits for its return
    referred = "referred"  # the referrer stops; the referred person is enrolled, if allowed
    unsubscribed = "unsubscribed"  # the one-click unsubscribe's operation
    recorded = "recorded"  # nothing changes


_STOPS_AS_INTENT = frozenset({Intent.interested, Intent.meeting_request, Intent.not_interested})
_WAITS = frozenset({Intent.out_of_office, Intent.not_now})


@dataclass(frozen=True)
class Decision:
    """The action, and the stop reason when the lead stops."""

    action: ReplyAction
    stop_reason: str | None = None


def decide(intent: ReplyIntent, event: EngagementType, *, min_confidence: float) -> Decision:
    """The action a reply (or auto-reply) event's classification takes."""
    if intent.intent is Intent.other or intent.confidence < min_confidence:
        # Undecided: what every reply did before there were intents.
        if event is EngagementType.reply:
            return Decision(ReplyAction.stopped, REPLIED)
        return Decision(ReplyAction.recorded)
    if intent.intent in _STOPS_AS_INTENT:
        return Decision(ReplyAction.stopped, intent.intent.value)
    if intent.intent in _WAITS:
        return Decision(ReplyAction.rescheduled)
    if intent.intent is Intent.referral:
        return Decision(ReplyAction.referred, REFERRAL)
    if intent.intent is Intent.unsubscribe:
        return Decision(ReplyAction.unsubscribed)
    return Decision(ReplyAction.recorded)


def resume_at(
    intent: ReplyIntent,
    *,
    now: datetime,
    default_pause: timedelta,
    raw_rules: object,
    lead_timezone: str | None,
    lead_country: object,
) -> datetime:
    """When a waiting lead's follow-up may leave: the first moment of the campaign's window, in
    the lead's zone and past its closed days, on a working day after the return date (or after
    the default pause when the reply names none); never before now. UTC."""
    rules = _rules_or_defaults(raw_rules)
    zone = lead_zone(lead_timezone, rules)
    if intent.return_date is not None:
        # The window's first day after the return date is "one working day after" it: a day
        # back at the desk before the follow-up, whatever day of the week they return.
        start = _local_midnight(intent.return_date + timedelta(days=1), zone)
    else:
        start = now + default_pause
    closed = closed_days(rules, lead_country, lead_timezone)
    return next_opening(max(start, now), rules.window, zone, closed).at


def moved_schedule(
    resume: datetime, *, next_step: datetime | None, first_pending: datetime | None
) -> tuple[datetime | None, timedelta]:
    """(the enrolment's new `nextScheduledDate`, how far its pending sends move).

    Pending sends move to `resume` when they would leave before it, and the next step moves by
    as much, so the delay between steps holds; with nothing pending the next step itself waits
    for `resume`.
    """
    if first_pending is not None:
        shift = max(resume - first_pending, timedelta(0))
        return (next_step + shift if next_step is not None else None), shift
    if next_step is None:
        return None, timedelta(0)
    return max(next_step, resume), timedelta(0)


@dataclass(frozen=True)
class Referrer:
    """The lead whose reply pointed elsewhere; a referred colleague at the same email domain
    inherits the company fields of its `profile`."""

    lead_id: str
    email: str
    first_name: str | None
    last_name: str | None
    profile: Mapping[str, object]


def referral_row(intent: ReplyIntent, *, reply_text: str, referrer: Referrer) -> LeadRow | str:
    """The referred person as a new lead, or why none can be made.

    The address must pass the leads file's check and be written in the reply's own text (a
    model that invents one is not followed), and not be the referrer's. Whether it is
    suppressed or already a lead is the database's to say.
    """
    if not intent.referral_email:
        return "no address given for the referral"
    written = {found.strip(".").lower() for found in ADDRESS_RE.findall(reply_text)}
    if intent.referral_email.lower() not in written:
        return "the referral's address is not written in the reply"
    try:
        email = normalise_email(intent.referral_email)
    except ValueError:
        return "the referral's address is not valid"  # the error quotes it: not kept
    if email.lower() == referrer.email.lower():
        return "the referral's address is the referrer's own"
    same_company = _domain(email) == _domain(referrer.email)

    def inherited(field: str) -> str | None:
        value = referrer.profile.get(field) if same_company else None
        return value if isinstance(value, str) and value else None

    first, _, last = (intent.referral_name or "").partition(" ")
    return LeadRow(
        email=email,
        firstName=first or None,
        lastName=last.strip() or None,
        companyName=inherited("companyName"),
        website=inherited("website"),
        industry=inherited("industry"),
        companySize=inherited("companySize"),
        customFields={
            "referredBy": _full_name(referrer) or referrer.email,
            "referredByLeadId": referrer.lead_id,
        },
    )


def _full_name(referrer: Referrer) -> str:
    return " ".join(part for part in (referrer.first_name, referrer.last_name) if part)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone)


def _rules_or_defaults(raw: object) -> SendingRules:
    # Rules that do not validate hold the campaign's sends anyway (delivery says why); the
    # pause is computed on the default window, so the reply is still acted on.
    try:
        return parse_sending_rules(raw)
    except (ValidationError, ValueError, TypeError):
        return SendingRules()
