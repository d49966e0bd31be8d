"""A follow-up's thread: what this campaign already sent the lead, and what came back from it.

The claim loads it (`db.queries.threads`): each earlier step's email that was actually `sent`,
its subject and body as sent, and the events on it that did not stop the lead. `prompt_thread`
turns that into the `<thread>` block of the prompt, bounded like the lead profile, and the same
block is hashed into the cache key, so a thread that changes (a new click, an auto-reply)
regenerates while an unchanged one hits the cache.

Addresses: the thread adds none the prompt does not already carry. A sent email passed the
gate, which lets through only the addresses its step's template put there (the owner's own text,
or `{{email}}` where the owner wrote it, as in the draft the model gets anyway); events are shown
as a kind and a day, never with their metadata or link.
"""

from collections.abc import Sequence
from datetime import timedelta, tzinfo
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict

from core.generation.prompt import PROFILE_LEFT_OUT, cut_text


class CameBack(StrEnum):
    """What came back from a sent email without stopping the lead (EngagementEvent types).

    Replies, bounces, unsubscribes and complaints stop the lead, so none is ever here, and opens
    are left out: image proxies fetch them for nobody. Reply intents (issue 14) add their own
    kinds here, an out-of-office with its return date first; until then an out-of-office is the
    `auto_reply` the inbox reader tells apart from a reply.
    """

    auto_reply = "auto_reply"
    click = "click"


class ThreadEvent(BaseModel):
    """One event on a sent email."""

    model_config = ConfigDict(frozen=True)

    kind: CameBack
    occurredAt: AwareDatetime
    # Only to tell a scanner's sweep over every link from a person's clicks; the model never
    # sees it (a tracked link can carry tokens).
    url: str | None = None


class SentEmail(BaseModel):
    """An earlier step's email as it went out to the lead, with the events on it."""

    model_config = ConfigDict(frozen=True)

    stepOrder: int
    sentAt: AwareDatetime
    subject: str
    body: str
    events: tuple[ThreadEvent, ...] = ()


# Link scanners (Safe Links, Mimecast, Proofpoint and the like) follow the links of an email
# before a person sees it: soon after delivery, and every link within seconds. The thread never
# holds a click ingestion marked as a machine's (EngagementEvent.isMachine); these wider margins
# are the prompt's own caution on top: a click this soon after the send, or this close to a
# click on another link of the same email, is left out too. An early human click is lost that
# way; the model is never told of a click nobody made.
MACHINE_CLICK_DELAY = timedelta(minutes=10)
MACHINE_CLICK_SWEEP = timedelta(seconds=10)

# Bounds on the thread sent with every follow-up, for the lead profile's reasons: the newest
# emails (the ones a follow-up answers to), each subject and body cut like a profile value, and
# the newest events of each email, one per kind and day.
THREAD_EMAILS = 5
THREAD_VALUE_CHARS = 2_000
THREAD_EVENTS = 5


def is_machine_click(click: ThreadEvent, email: SentEmail) -> bool:
    """A click within `MACHINE_CLICK_DELAY` of the send, or part of a sweep over its links."""
    if click.occurredAt - email.sentAt < MACHINE_CLICK_DELAY:
        return True
    return any(
        other.kind is CameBack.click
        and other.url != click.url
        and abs(other.occurredAt - click.occurredAt) <= MACHINE_CLICK_SWEEP
        for other in email.events
    )


def came_back(email: SentEmail) -> list[ThreadEvent]:
    """The email's events a person or their mailbox caused, oldest first."""
    kept = [
        event
        for event in email.events
        if event.kind is not CameBack.click or not is_machine_click(event, email)
    ]
    return sorted(kept, key=lambda event: event.occurredAt)


def prompt_thread(thread: Sequence[SentEmail], zone: tzinfo) -> list[dict[str, object]]:
    """The `<thread>` the model sees: sent emails oldest first, dates in the lead's zone, bounded.

    Only the newest `THREAD_EMAILS` emails are kept, with a first item counting the rest; each
    subject and body is cut at `THREAD_VALUE_CHARS`; each email keeps its newest
    `THREAD_EVENTS` events, one per kind and day, counting the rest. Empty without a thread.
    """
    ordered = sorted(thread, key=lambda email: (email.sentAt, email.stepOrder))
    kept = ordered[-THREAD_EMAILS:]
    items: list[dict[str, object]] = []
    if len(ordered) > len(kept):
        left_out = len(ordered) - len(kept)
        items.append({PROFILE_LEFT_OUT: f"{left_out} earlier emails left out to keep it short"})
    for email in kept:
        item: dict[str, object] = {
            "step": email.stepOrder,
            "sentOn": email.sentAt.astimezone(zone).date().isoformat(),
            "subject": cut_text(email.subject, THREAD_VALUE_CHARS),
            "body": cut_text(email.body, THREAD_VALUE_CHARS),
        }
        days = {
            (event.kind.value, event.occurredAt.astimezone(zone).date().isoformat()): None
            for event in came_back(email)
        }
        events = [{"kind": kind, "on": day} for kind, day in days]
        if events:
            item["cameBack"] = events[-THREAD_EVENTS:]
        if len(events) > THREAD_EVENTS:
            left_out = len(events) - THREAD_EVENTS
            item[PROFILE_LEFT_OUT] = f"{left_out} earlier events left out to keep it short"
        items.append(item)
    return items
