"""What an approved message becomes: checked by the quality gate again, then given its slot.

A person approved a message awaiting review (the web app sets `status = 'approved'`, perhaps
after editing its subject or body; `campaign-pipeline review approve` does the same). The next
generation run checks the approved text against the step's template and the campaign's rules
exactly as it checks a fresh draft. Text that passes gets the slot and the lead's progression
generation would have planned at that moment; text that fails goes back to review with the
gate's reasons. Nothing here touches the database or Prefect.
"""

from dataclasses import asdict, dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from core.generation.draft import EmailDraft
from core.generation.due_lead import DueLead
from core.generation.gate import check_draft, normalize_draft
from core.generation.generate import Prepared, plan_progression, prepare


class ApprovedMessage(BaseModel):
    """A send awaiting review whose message a person approved, its text as read, and its lead
    as generation sees it (at the send's step)."""

    model_config = ConfigDict(frozen=True)

    sendId: str
    messageId: str
    subject: str
    body: str
    lead: DueLead


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What the run writes for one approved message; `seen*` is the text it checked, so an edit
    made meanwhile is never released unchecked."""

    sendId: str
    messageId: str
    stepOrder: int
    seenSubject: str
    seenBody: str


@dataclass(frozen=True, kw_only=True)
class Release(Verdict):
    """Approved text that passed the gate: as normalised, the send's slot, the lead's next step."""

    subject: str
    body: str
    scheduledFor: datetime
    nextStepOrder: int
    nextScheduledDate: datetime | None
    completed: bool


@dataclass(frozen=True, kw_only=True)
class SendBack(Verdict):
    """Approved text the gate refused (or a lead that can no longer be checked): back to review."""

    reason: str


def judge_approved(message: ApprovedMessage, *, as_of: datetime, model: str) -> Release | SendBack:
    """Check an approved message as a fresh draft is checked; plan its slot if it passes."""
    seen = asdict(
        Verdict(
            sendId=message.sendId,
            messageId=message.messageId,
            stepOrder=message.lead.stepOrder,
            seenSubject=message.subject,
            seenBody=message.body,
        )
    )
    prepared = prepare(message.lead, model=model)
    if not isinstance(prepared, Prepared):
        return SendBack(**seen, reason=f"cannot be checked: {prepared.reason}")
    draft = normalize_draft(EmailDraft(subject=message.subject, body=message.body))
    problems = check_draft(draft, rendered=prepared.trusted, rules=prepared.rules)
    if problems:
        return SendBack(
            **seen, reason="the approved text fails the quality gate: " + "; ".join(problems)
        )
    progression = plan_progression(message.lead, prepared.rules, as_of)
    assert progression.scheduled_for is not None  # plan_progression always gives a slot
    return Release(
        **seen,
        subject=draft.subject,
        body=draft.body,
        scheduledFor=progression.scheduled_for,
        nextStepOrder=progression.next_step_order,
        nextScheduledDate=progression.next_scheduled_date,
        completed=progression.completed,
    )
