"""Review before send: which new messages wait for a person (`sendingRules.review`).

A message that needs review is written `pending_review`, its send without a slot and its lead
held at its step with no next date, so nothing is due until a person approves it
(`core.generation.approval` then checks the approved text and gives the send its slot).
"""

from collections.abc import Iterable

from pydantic import ValidationError

from core.campaigns.sending_rules import ReviewPolicy, SendingRules, parse_sending_rules
from core.generation.due_lead import DueLead

# How the reason on a send awaiting review, and on a rejected one, begins.
AWAITING_REVIEW = "awaiting review"
REJECTED_IN_REVIEW = "rejected in review"


def review_reason(
    rules: SendingRules, *, earlier: int, fallback: str | None, flagged: str | None
) -> str | None:
    """Why a new message must wait for a person before it is sent, or None.

    `earlier` counts the messages of its step written before it (`review: first`); `fallback`
    is why the template was used instead of the LLM's draft, `flagged` what the gate found
    wrong with a first draft whose retry passed.
    """
    if rules.review is ReviewPolicy.first and earlier < (rules.review_count or 0):
        return f"one of the first {rules.review_count} messages of its step (review: first)"
    return review_need(rules, fallback=fallback, flagged=flagged)


def review_need(rules: SendingRules, *, fallback: str | None, flagged: str | None) -> str | None:
    """Why a message must wait for a person whatever its place in its step, or None:
    `review: all`, or with `review: first` a fallback or a draft the gate flagged."""
    if rules.review is ReviewPolicy.all:
        return "every message is reviewed (review: all)"
    if rules.review is not ReviewPolicy.first:
        return None
    if fallback is not None:
        return f"the template was used instead of the LLM's draft ({fallback})"
    if flagged is not None:
        return f"the quality gate flagged the first draft ({flagged})"
    return None


def rewrite_review(
    rules: SendingRules,
    *,
    awaiting: bool,
    reviewed_before: bool,
    fallback: str | None,
    flagged: str | None,
) -> str | None:
    """Why a step backfill's new message must wait for a person, or None.

    `awaiting`: its send awaits review, so the new text is what the person reviews. Otherwise
    the send was released; `reviewed_before` says a person saw the message it replaces (one of
    a step's first ones), so under a review rule its successor needs review as well.
    """
    if awaiting:
        return "regenerated while awaiting review"
    if reviewed_before and rules.review is not ReviewPolicy.none:
        return "regenerated after its earlier text was reviewed"
    return review_need(rules, fallback=fallback, flagged=flagged)


def first_reviewed_steps(leads: Iterable[DueLead]) -> dict[str, int]:
    """The steps of these leads whose first messages are reviewed (`review: first`): step id ->
    reviewCount, so the messages written so far need counting only that far."""
    steps: dict[str, int] = {}
    for lead in leads:
        if lead.stepId is None:
            continue
        try:
            rules = parse_sending_rules(lead.sendingRules)
        except ValidationError:
            continue  # generation holds this lead, with the rules' problems as its reason
        if rules.review is ReviewPolicy.first and rules.review_count is not None:
            steps[lead.stepId] = rules.review_count
    return steps
