"""Regenerating a step's not-yet-sent messages after its instructions changed: pure planning.

A scheduled `EmailSend` keeps its slot (`scheduledFor`, mailbox, everything delivery planned); only
the message it points to is replaced. The new message comes from the same path as any other
(`core.generation.generate.prepare` and `generate_for_lead`), so the prompt, the gate, the failure
policy and the cache key are the generation flow's own. A send whose current message was already
written from exactly these inputs (same input hash, not a fallback) is left as it is, so running a
backfill twice changes nothing the second time.
"""

from dataclasses import asdict, dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from core.campaigns.sending_rules import parse_sending_rules
from core.generation.due_lead import DueLead
from core.generation.generate import (
    LeadOutcome,
    MessageContent,
    OutcomeKind,
    Prepared,
    message_content,
    prepare,
)
from core.generation.review import rewrite_review
from core.ids import new_id
from core.statuses import CampaignStatus, GeneratedMessageStatus


class StepTarget(BaseModel):
    """The campaign step a backfill regenerates (or a launch review samples), as the database
    knows it."""

    campaign_id: str
    step_order: int
    campaign_found: bool = False
    campaign_status: CampaignStatus | None = None
    step_id: str | None = None
    step_orders: list[int] = []

    def problem(self) -> str | None:
        """Why this backfill cannot run, or None."""
        if not self.campaign_found:
            return f"no campaign with id {self.campaign_id!r}"
        if self.step_id is None:
            steps = ", ".join(str(order) for order in self.step_orders) or "none"
            return (
                f"campaign {self.campaign_id} has no step with stepOrder {self.step_order} "
                f"(its steps: {steps})"
            )
        return None


class StepSend(BaseModel):
    """A scheduled send of the step, its current message, and its lead as generation needs it."""

    model_config = ConfigDict(frozen=True)

    sendId: str
    scheduledFor: datetime | None = None
    currentMessageId: str | None = None
    currentInputHash: str | None = None
    currentFallbackReason: str | None = None
    currentMessageStatus: str | None = None
    lead: DueLead

    @property
    def awaiting_review(self) -> bool:
        """The send has no slot until a person approves its message (core.generation.review)."""
        return self.scheduledFor is None


def up_to_date(send: StepSend, *, model: str) -> bool:
    """The current message was generated (not fallen back) from exactly today's inputs."""
    if send.currentInputHash is None or send.currentFallbackReason is not None:
        return False
    prepared = prepare(send.lead, model=model)
    return isinstance(prepared, Prepared) and prepared.input_hash == send.currentInputHash


def split_up_to_date(sends: list[StepSend], *, model: str) -> tuple[list[StepSend], list[StepSend]]:
    """(sends to regenerate, sends whose message is already current)."""
    stale: list[StepSend] = []
    current: list[StepSend] = []
    for send in sends:
        (current if up_to_date(send, model=model) else stale).append(send)
    return stale, current


@dataclass(frozen=True, kw_only=True)
class MessageRewrite(MessageContent):
    """A send's new message; the send itself keeps its slot."""

    sendId: str
    messageId: str


@dataclass(frozen=True)
class KeptMessage:
    """A send that could not be regenerated, or whose new message would need a review its
    released send no longer waits for: it keeps its previous message, and why."""

    sendId: str
    reason: str
    for_review: bool = False


def plan_rewrites(
    sends: list[StepSend], outcomes: list[LeadOutcome]
) -> tuple[list[MessageRewrite], list[KeptMessage]]:
    """Outcomes (in the order of `sends`) as new messages, or as sends keeping their message.

    A fallback is written like any message (the campaign's `onGenerationFailure` policy chose
    it); a held outcome writes nothing, so the send goes out with its previous message unless a
    later backfill succeeds. Under review before send, a send awaiting review gets its new
    message `pending_review`; a released send whose new message would need review keeps the
    one it has, since taking its slot back could let its lead's next step overtake it.
    """
    rewrites: list[MessageRewrite] = []
    kept: list[KeptMessage] = []
    for send, outcome in zip(sends, outcomes, strict=True):
        if outcome.kind is OutcomeKind.held or outcome.draft is None:
            kept.append(KeptMessage(send.sendId, outcome.reason or "no draft"))
            continue
        review = rewrite_review(
            parse_sending_rules(send.lead.sendingRules),  # prepared, so they parse
            awaiting=send.awaiting_review,
            reviewed_before=send.currentMessageStatus != GeneratedMessageStatus.generated,
            fallback=outcome.reason if outcome.kind is OutcomeKind.fallback else None,
            flagged=outcome.flagged,
        )
        if review is not None and not send.awaiting_review:
            reason = f"the new draft would need review ({review}); the released message stays"
            kept.append(KeptMessage(send.sendId, reason, for_review=True))
            continue
        content = message_content(outcome, outcome.draft, review_reason=review)
        rewrites.append(MessageRewrite(sendId=send.sendId, messageId=new_id(), **asdict(content)))
    return rewrites, kept
