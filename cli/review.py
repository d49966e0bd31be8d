"""`campaign-pipeline review …`: review before send for operators without the web app."""

from typing import Annotated

import typer

from cli.context import connect, fail, out
from core.analytics.campaign_report import human_duration
from core.statuses import GeneratedMessageStatus
from db.base import utcnow
from db.engine import unit_of_work
from db.queries.review import ReviewMessage, decide, get_message, list_pending, step_pending

review_app = typer.Typer(
    no_args_is_help=True,
    help="Messages waiting for a person before they are sent: list, show, approve, reject.",
)

PENDING = GeneratedMessageStatus.pending_review
APPROVED = GeneratedMessageStatus.approved
REJECTED = GeneratedMessageStatus.rejected
# A rejection can be reconsidered; a message approved or superseded cannot be approved again.
APPROVABLE = (PENDING, REJECTED)


@review_app.command("list")
def review_list(
    campaign: Annotated[str | None, typer.Option("--campaign", help="Campaign id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 200,
) -> None:
    """Messages pending review, oldest first: id, campaign, step, recipient, subject, why."""
    database = connect()
    now = utcnow()
    with unit_of_work(database.sessions) as session:
        messages = list_pending(session, campaign_id=campaign, limit=limit)
    if not messages:
        out.print("nothing pending review" + (f" in campaign {campaign}" if campaign else ""))
    for message in messages:
        waiting = human_duration((now - message.createdAt).total_seconds())
        out.print(
            f"{message.id}  {message.campaignName} ({message.campaignId}) step "
            f"{message.stepOrder}  to {message.email}  waiting {waiting}: "
            f"{message.subject!r}  ({message.reviewReason or 'no reason recorded'})"
        )


@review_app.command("show")
def review_show(message_id: Annotated[str, typer.Argument(help="Message id.")]) -> None:
    """One message in full, with why it waits, what a reviewer said, and its send."""
    database = connect()
    with unit_of_work(database.sessions) as session:
        message = get_message(session, message_id)
    if message is None:
        raise fail(f"no message with id {message_id!r}; `review list` shows the pending ones")
    for line in _details(message):
        out.print(line)


def _details(message: ReviewMessage) -> list[str]:
    name = " ".join(part for part in (message.firstName, message.lastName) if part)
    lines = [
        f"message {message.id}: {message.status}",
        f"campaign {message.campaignName} ({message.campaignId}), step {message.stepOrder}",
        f"to {name + ' ' if name else ''}<{message.email}>",
        f"written {message.createdAt:%Y-%m-%d %H:%M} UTC by {message.model or 'unknown'}",
    ]
    if message.fallbackReason:
        lines.append(f"the template was used instead of the LLM's draft: {message.fallbackReason}")
    if message.reviewReason:
        lines.append(f"why it needs review: {message.reviewReason}")
    if message.reviewedAt:
        note = f": {message.reviewNote}" if message.reviewNote else ""
        lines.append(f"reviewed {message.reviewedAt:%Y-%m-%d %H:%M} UTC{note}")
    if message.sendStatus is not None:
        when = f", due {message.scheduledFor:%Y-%m-%d %H:%M} UTC" if message.scheduledFor else ""
        why = f" ({message.sendReason})" if message.sendReason else ""
        lines.append(f"send: {message.sendStatus}{when}{why}")
    lines += ["", f"Subject: {message.subject}", "", message.body]
    return lines


@review_app.command("approve")
def review_approve(
    message_ids: Annotated[list[str], typer.Argument(help="Message ids.")],
    all_in_step: Annotated[
        bool,
        typer.Option(
            "--all-in-step",
            help="Approve every message pending review in the campaign step of the one id given.",
        ),
    ] = False,
) -> None:
    """Approve messages: the next generation run gates each text again and schedules it."""
    database = connect()
    with unit_of_work(database.sessions) as session:
        if all_in_step:
            if len(message_ids) != 1:
                raise fail("--all-in-step takes exactly one message id: its step is approved")
            (anchor,) = message_ids
            message_ids = step_pending(session, anchor)
            if not message_ids:
                raise fail(f"nothing pending review in the step of message {anchor!r}")
        before = decide(
            session, message_ids, status=APPROVED, from_statuses=APPROVABLE, note=None, now=utcnow()
        )
    _report(message_ids, before, "approved", APPROVABLE)
    out.print(
        "the next process-campaign-sends run checks them with the quality gate and schedules them"
    )


@review_app.command("reject")
def review_reject(
    message_id: Annotated[str, typer.Argument(help="Message id.")],
    why: Annotated[
        str, typer.Option("--why", help="The reason, kept on the message, its send and its lead.")
    ],
) -> None:
    """Reject a message pending review: it is never sent, and its lead waits with the reason."""
    if not why.strip():
        raise fail("--why needs a reason; it is shown on the message, its send and its lead")
    database = connect()
    with unit_of_work(database.sessions) as session:
        before = decide(
            session,
            [message_id],
            status=REJECTED,
            from_statuses=(PENDING,),
            note=why.strip(),
            now=utcnow(),
        )
    _report([message_id], before, "rejected", (PENDING,))
    out.print(
        "its lead waits at this step: approve an edited text, or regenerate the step with new "
        "instructions"
    )


def _report(
    ids: list[str],
    before: dict[str, GeneratedMessageStatus],
    verb: str,
    allowed: tuple[GeneratedMessageStatus, ...],
) -> None:
    """One line per id; a non-zero exit when any of them was left as it was."""
    refused = 0
    for message_id in ids:
        status = before.get(message_id)
        if status in allowed:
            out.print(f"{verb} {message_id}")
            continue
        refused += 1
        if status is None:
            out.print(f"{message_id}: no such message")
        else:
            kinds = " or ".join(s.value for s in allowed)
            out.print(f"{message_id}: is {status}; only a message {kinds} can be {verb}")
    if refused:
        raise fail(f"{refused} of {len(ids)} message(s) left as they were")
