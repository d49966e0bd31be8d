"""One lead's generation, start to finish: render, ask the LLM, gate, retry once, apply policy.

Nothing here touches the database or Prefect; the cache is a small Protocol the task layer fills.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from core.campaigns.closed_days import closed_days
from core.campaigns.schedule import lead_zone, next_opening, next_step_date, next_window_opening
from core.campaigns.sending_rules import (
    GenerationFailurePolicy,
    SendingRules,
    describe_errors,
    parse_sending_rules,
)
from core.campaigns.templates import TemplateError, lead_variables
from core.generation.draft import EmailDraft, render_draft
from core.generation.due_lead import DueLead
from core.generation.gate import check_draft, normalize_draft, trusted_variables
from core.generation.llm import TEMPLATE_MODEL, Generation, Generator, LLMError
from core.generation.pricing import cost_column
from core.generation.prompt import (
    PROMPT_VERSION,
    build_messages,
    generation_input_hash,
    prompt_profile,
)
from core.generation.review import review_reason
from core.generation.thread import prompt_thread
from core.ids import new_id
from core.statuses import GeneratedMessageStatus, Pricing


class OutcomeKind(StrEnum):
    generated = "generated"  # LLM output that passed the gate
    fallback = "fallback"  # the rendered template, by the campaign's policy
    held = "held"  # nothing written but the reason; retried after a backoff


class FailureCause(StrEnum):
    """Why a lead has no draft of its own (held, or fallen back to the template)."""

    lead_data = "lead_data"  # the lead, its step or its campaign's rules; fixed by a person
    llm = "llm"  # the LLM call failed; worth trying again soon
    quality_gate = "quality_gate"  # the answer failed the gate, even after one retry


class GenerationCache(Protocol):
    """Finished LLM work by content key, so a retry or re-run never pays twice."""

    async def get(self, key: str) -> Generation | None:
        """The stored generation, or None."""
        ...

    async def put(self, key: str, generation: Generation) -> None:
        """Store a finished generation."""
        ...


class NoCache:
    """The offline generator costs nothing, so nothing is worth storing."""

    async def get(self, key: str) -> Generation | None:
        """Never a hit."""
        return None

    async def put(self, key: str, generation: Generation) -> None:
        """Nothing to keep."""


@dataclass(frozen=True)
class Prepared:
    """A lead ready for the LLM: rules parsed, draft rendered, prompt built, key computed."""

    lead: DueLead
    rules: SendingRules
    rendered: EmailDraft
    trusted: EmailDraft
    profile: dict[str, str]
    thread: list[dict[str, object]]
    input_hash: str
    sender_name: str | None

    def messages(self, retry_reason: str | None = None) -> list[dict[str, str]]:
        """The chat messages; a retry adds what the last answer got wrong."""
        return build_messages(
            self.lead.goal,
            self.lead.aiInstructions,
            self.rendered,
            self.profile,
            sender_name=self.sender_name,
            link_allowlist=self.rules.link_allowlist,
            retry_reason=retry_reason,
            thread=self.thread,
        )


@dataclass(frozen=True)
class LeadOutcome:
    """What generation decided for one lead; carries no address, so results stay PII-light."""

    campaignLeadId: str
    kind: OutcomeKind
    reason: str | None = None
    cause: FailureCause | None = None
    draft: EmailDraft | None = None
    generation: Generation | None = None
    input_hash: str | None = None
    cache_hit: bool = False
    llm_calls: int = 0
    # What the gate found wrong with the first draft when the retry then passed.
    flagged: str | None = None
    # The step variant the draft was written in (its overrides were the step's).
    variant_key: str | None = None
    # The draft is the one written ahead through the Batch API (no LLM call now).
    pregenerated: bool = False


def sender_name(rules: SendingRules) -> str | None:
    """The name templates see as {{senderName}}."""
    mailboxes = rules.sending_mailboxes()
    return rules.from_name or (mailboxes[0].name if mailboxes else None)


def prepare(lead: DueLead, *, model: str) -> Prepared | LeadOutcome:
    """Everything that can fail before the LLM, each failure a held outcome with its reason.

    The lead is taken in its step variant, whose overrides are then the step's templates and
    instructions for the render, the prompt and the cache key alike.
    """
    lead = lead.in_variant()

    def held(reason: str) -> LeadOutcome:
        return LeadOutcome(
            lead.campaignLeadId, OutcomeKind.held, reason=reason, cause=FailureCause.lead_data
        )

    try:
        rules = parse_sending_rules(lead.sendingRules)
    except ValidationError as exc:
        return held("sendingRules: " + "; ".join(describe_errors(exc)))
    if lead.stepId is None or lead.subjectTemplate is None or lead.bodyTemplate is None:
        return held(f"no SequenceStep with stepOrder {lead.stepOrder} in this campaign")
    try:
        validate_email(lead.email, check_deliverability=False)
    except EmailNotValidError as exc:
        return held(f"Lead.email is not a valid address ({exc})")
    if not isinstance(lead.customFields, Mapping):
        return held("Lead.customFields is not a JSON object")
    name = sender_name(rules)
    variables = lead_variables(lead.profile_fields, lead.customFields, name)
    try:
        rendered = render_draft(lead.subjectTemplate, lead.bodyTemplate, variables)
        trusted = render_draft(
            lead.subjectTemplate, lead.bodyTemplate, trusted_variables(variables)
        )
    except TemplateError as exc:
        return held(f"template: {exc}")
    # The rendered template is also the fallback, so lead data that puts a link, an address or
    # instructions into it holds the lead before anything is generated or sent.
    problems = check_draft(rendered, rendered=trusted, rules=rules)
    if problems:
        return held("lead data in the template: " + "; ".join(problems))
    # What the model sees of the thread is what shapes the answer, so that is what is hashed.
    thread = prompt_thread(lead.thread, lead_zone(lead.timezone, rules))
    key = generation_input_hash(
        lead_profile=variables,
        subject_template=lead.subjectTemplate,
        body_template=lead.bodyTemplate,
        ai_instructions=lead.aiInstructions,
        goal=lead.goal,
        sender_name=name,
        link_allowlist=rules.link_allowlist,
        model=model,
        thread=thread,
        variant_key=lead.variantKey,
    )
    return Prepared(lead, rules, rendered, trusted, prompt_profile(variables), thread, key, name)


async def generate_for_lead(
    prepared: Prepared, generator: Generator, cache: GenerationCache, *, model: str
) -> LeadOutcome:
    """Ask the LLM (or the cache), gate the answer, retry once with the reason, apply policy."""
    ahead = pregenerated_outcome(prepared)
    if ahead is not None:
        return ahead
    outcome = LeadOutcome(
        prepared.lead.campaignLeadId,
        OutcomeKind.held,
        input_hash=prepared.input_hash,
        variant_key=prepared.lead.variantKey,
    )
    retry_reason: str | None = None
    for attempt in range(2):
        key = prepared.input_hash if attempt == 0 else _retry_key(prepared.input_hash, retry_reason)
        generation = await cache.get(key)
        if generation is not None:
            outcome = replace(outcome, cache_hit=outcome.cache_hit or attempt == 0)
        else:
            try:
                generation = await generator.generate(prepared.messages(retry_reason), model=model)
            except LLMError as exc:
                calls = outcome.llm_calls + max(exc.attempts, 1)
                outcome = replace(outcome, llm_calls=calls)
                return _policy(prepared, outcome, FailureCause.llm, f"LLM: {exc}")
            outcome = replace(outcome, llm_calls=outcome.llm_calls + max(generation.attempts, 1))
            await cache.put(key, generation)
        # Kept even when the gate fails, so what a fallback cost is still accounted for.
        outcome = replace(outcome, generation=generation)
        draft = normalize_draft(generation.draft)
        problems = check_draft(draft, rendered=prepared.trusted, rules=prepared.rules)
        if not problems:
            return replace(
                outcome,
                kind=OutcomeKind.generated,
                draft=draft,
                generation=generation,
                flagged=retry_reason,
            )
        retry_reason = "; ".join(problems)
    return _policy(prepared, outcome, FailureCause.quality_gate, f"quality gate: {retry_reason}")


def pregenerated_outcome(prepared: Prepared) -> LeadOutcome | None:
    """The draft written ahead for this step, when it was written from exactly this input (same
    content hash: template, instructions, lead data and thread unchanged) and still passes the
    gate; else None, and the lead is generated now (its stale draft is then superseded)."""
    ahead = prepared.lead.pregenerated
    if ahead is None or ahead.inputHash != prepared.input_hash:
        return None
    draft = normalize_draft(EmailDraft(subject=ahead.subject, body=ahead.body))
    if check_draft(draft, rendered=prepared.trusted, rules=prepared.rules):
        return None
    generation = Generation(
        draft=draft,
        model=ahead.model,
        prompt_tokens=ahead.promptTokens,
        completion_tokens=ahead.completionTokens,
        latency_ms=0,
        cost_usd=None if ahead.costUsd is None else float(ahead.costUsd),
        attempts=0,
        cached_tokens=ahead.cachedTokens,
        # Unknown with its total: a draft of a model with no price has neither.
        cached_cost_usd=None if ahead.costUsd is None else float(ahead.cachedCostUsd),
        pricing=Pricing.batch,
    )
    return LeadOutcome(
        prepared.lead.campaignLeadId,
        OutcomeKind.generated,
        draft=draft,
        generation=generation,
        input_hash=prepared.input_hash,
        variant_key=prepared.lead.variantKey,
        pregenerated=True,
    )


def _policy(
    prepared: Prepared, outcome: LeadOutcome, cause: FailureCause, reason: str
) -> LeadOutcome:
    failed = replace(outcome, reason=reason, cause=cause)
    if prepared.rules.on_generation_failure is GenerationFailurePolicy.hold:
        return replace(failed, kind=OutcomeKind.held)
    return replace(failed, kind=OutcomeKind.fallback, draft=prepared.rendered)


def _retry_key(input_hash: str, reason: str | None) -> str:
    digest = hashlib.sha256((reason or "").encode()).hexdigest()[:16]
    return f"{input_hash}-retry-{digest}"


@dataclass(frozen=True)
class Progression:
    """Where a lead goes once its send for this step is scheduled (no slot: awaiting review)."""

    scheduled_for: datetime | None
    next_step_order: int
    next_scheduled_date: datetime | None
    completed: bool


def plan_progression(lead: DueLead, rules: SendingRules, as_of: datetime) -> Progression:
    """The send goes at the first window opening; the next step follows its delayDays later.

    The send itself keeps that opening even on a holiday or skip date, so delivery defers it
    with the day named; the delay counts from the day it can leave, so a follow-up never
    catches up with the message it follows.
    """
    zone = lead_zone(lead.timezone, rules)
    scheduled_for = next_window_opening(as_of, rules.window, zone)
    if lead.nextStepDelayDays is None:
        return Progression(scheduled_for, lead.stepOrder + 1, None, completed=True)
    fields = lead.customFields if isinstance(lead.customFields, Mapping) else {}
    closed = closed_days(rules, fields.get("country"), lead.timezone)
    leaves = next_opening(scheduled_for, rules.window, zone, closed).at
    next_date = next_step_date(leaves, lead.nextStepDelayDays, zone)
    return Progression(scheduled_for, lead.stepOrder + 1, next_date, completed=False)


@dataclass(frozen=True, kw_only=True)
class MessageContent:
    """A GeneratedMessage's own columns for one outcome: the draft and what it cost."""

    subject: str
    body: str
    model: str
    promptVersion: str
    inputHash: str | None
    promptTokens: int
    completionTokens: int
    latencyMs: int
    costUsd: Decimal | None  # None: an LLM call of a model with no price (unknown, not free)
    fallbackReason: str | None
    cachedTokens: int = 0
    cachedCostUsd: Decimal | None = Decimal(0)  # the part of costUsd paid for the cached tokens
    pricing: Pricing | None = None  # None: no LLM call (the template)
    status: GeneratedMessageStatus = GeneratedMessageStatus.generated
    reviewReason: str | None = None  # set with status pending_review: why it waits for a person
    variantKey: str | None = None


def message_content(
    outcome: LeadOutcome, draft: EmailDraft, *, review_reason: str | None = None
) -> MessageContent:
    """The message columns of an outcome that produced `draft` (generated or fallen back);
    with a review reason it is written `pending_review`."""
    generation = outcome.generation
    return MessageContent(
        subject=draft.subject,
        body=draft.body,
        model=generation.model if generation else TEMPLATE_MODEL,
        promptVersion=PROMPT_VERSION,
        inputHash=outcome.input_hash,
        promptTokens=generation.prompt_tokens if generation else 0,
        completionTokens=generation.completion_tokens if generation else 0,
        latencyMs=generation.latency_ms if generation else 0,
        costUsd=cost_column(generation.cost_usd) if generation else Decimal(0),
        fallbackReason=outcome.reason if outcome.kind is OutcomeKind.fallback else None,
        cachedTokens=generation.cached_tokens if generation else 0,
        cachedCostUsd=cost_column(generation.cached_cost_usd) if generation else Decimal(0),
        pricing=generation.pricing if generation else None,
        status=GeneratedMessageStatus.generated
        if review_reason is None
        else GeneratedMessageStatus.pending_review,
        reviewReason=review_reason,
        variantKey=outcome.variant_key,
    )


@dataclass(frozen=True, kw_only=True)
class MessageWrite(MessageContent):
    """One lead's generated message, its send, and where the lead goes next.

    A message awaiting review has a send without a slot (`scheduledFor` None) and a lead that
    stays at its step with no next date: only an approval moves them (`core.generation.review`).
    """

    campaignLeadId: str
    stepOrder: int
    stepId: str
    messageId: str
    sendId: str
    scheduledFor: datetime | None
    nextStepOrder: int
    nextScheduledDate: datetime | None
    completed: bool
    # Takes the step's pregenerated message (same draft) instead of inserting a new one.
    adopted: bool = False


@dataclass(frozen=True)
class Hold:
    """A lead that could not be generated: why, until when, and whether it gives up now."""

    campaignLeadId: str
    reason: str
    until: datetime
    give_up: bool


HOLD_BASE = timedelta(minutes=15)
HOLD_MAX = timedelta(hours=24)


def hold_until(as_of: datetime, attempts: int, *, transient: bool) -> datetime:
    """Backoff for a held lead: 15 min doubling per attempt for LLM outages, else a day."""
    if not transient:
        return as_of + HOLD_MAX
    doubling: int = 2 ** max(attempts - 1, 0)  # int ** int is typed Any (it may be a float)
    return as_of + min(HOLD_BASE * doubling, HOLD_MAX)


def plan_writes(
    leads: list[DueLead],
    outcomes: list[LeadOutcome],
    *,
    as_of: datetime,
    max_attempts: int,
    step_messages: Mapping[str, int] | None = None,
) -> tuple[list[MessageWrite], list[Hold]]:
    """Turn a batch's outcomes into the rows to write: sends with progression, or holds.

    `step_messages` counts each step's messages written before this batch (by step id), for
    the campaigns that review the first messages of each step (`review.first_reviewed_steps`).
    """
    by_id = {lead.campaignLeadId: lead for lead in leads}
    earlier = dict(step_messages or {})
    writes: list[MessageWrite] = []
    holds: list[Hold] = []
    for outcome in outcomes:
        lead = by_id[outcome.campaignLeadId]
        if outcome.kind is OutcomeKind.held or outcome.draft is None or lead.stepId is None:
            attempts = lead.attempts + 1
            # Held because the LLM was unavailable: a short backoff is worth it.
            transient = outcome.cause is FailureCause.llm
            until = hold_until(as_of, attempts, transient=transient)
            reason = outcome.reason or "no draft"
            holds.append(Hold(lead.campaignLeadId, reason, until, attempts >= max_attempts))
            continue
        rules = parse_sending_rules(lead.sendingRules)
        review = review_reason(
            rules,
            earlier=earlier.get(lead.stepId, 0),
            fallback=outcome.reason if outcome.kind is OutcomeKind.fallback else None,
            flagged=outcome.flagged,
        )
        earlier[lead.stepId] = earlier.get(lead.stepId, 0) + 1
        # Awaiting review: no slot and no next date, so the lead waits at its step until a
        # person approves (core.generation.approval then plans what is planned here).
        progression = (
            plan_progression(lead, rules, as_of)
            if review is None
            else Progression(None, lead.stepOrder, None, completed=False)
        )
        writes.append(
            MessageWrite(
                campaignLeadId=lead.campaignLeadId,
                stepOrder=lead.stepOrder,
                stepId=lead.stepId,
                messageId=new_id(),
                sendId=new_id(),
                **asdict(message_content(outcome, outcome.draft, review_reason=review)),
                scheduledFor=progression.scheduled_for,
                nextStepOrder=progression.next_step_order,
                nextScheduledDate=progression.next_scheduled_date,
                completed=progression.completed,
                adopted=outcome.pregenerated,
            )
        )
    return writes, holds
