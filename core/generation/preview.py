"""Previewing one lead's email at one campaign step: the generation flow's own path, nothing kept.

A preview prepares the lead as a run does (`prepare`: the rules, the rendered template, the
lead-data check, the content hash), then asks the same generator through the same cache
(`generate_for_lead`: the prompt, the quality gate, its one retry, the failure policy), and
answers with what a run would do with that lead at that step and what finding out cost. The
cache is handed in (the flows keep it in Prefect's result storage, which lives above core), so
a draft a run already paid for costs a preview nothing, and the other way round. Offline (no
API key) the template generator answers, free, and nothing is cached, as in a run.
"""

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.campaigns.lead_fields import normalise_email
from core.campaigns.sending_rules import TimeZoneName
from core.generation.config import GenerationConfig
from core.generation.draft import EmailDraft
from core.generation.due_lead import DueLead
from core.generation.gate import check_draft, normalize_draft
from core.generation.generate import (
    GenerationCache,
    LeadOutcome,
    NoCache,
    OutcomeKind,
    generate_for_lead,
    prepare,
)
from core.generation.llm import Generation, Generator, LLMError
from core.generation.prompt import PROMPT_VERSION, Message


class PreviewNotFoundError(LookupError):
    """No such campaign, step or lead; the message says which, and is safe to answer with."""


class InlineLead(BaseModel):
    """A lead given with the request instead of read from the database: a Lead row's fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str
    firstName: str | None = None
    lastName: str | None = None
    companyName: str | None = None
    title: str | None = None
    industry: str | None = None
    companySize: str | None = None
    website: str | None = None
    timezone: TimeZoneName | None = None
    # Flat, as a leads file fills them: templates reach them as {{customFields.key}}.
    customFields: dict[str, str | int | float | bool | None] = {}

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        # The same check, and the same normal form, as a lead imported from a leads file.
        return normalise_email(value.strip())


class PreviewRequest(BaseModel):
    """What to preview: a lead of the campaign's workspace by id, or a lead given inline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    leadId: str | None = Field(default=None, min_length=1)
    lead: InlineLead | None = None

    @model_validator(mode="after")
    def _one_lead(self) -> Self:
        if (self.leadId is None) == (self.lead is None):
            raise ValueError("give either leadId or lead (a lead object), not both or neither")
        return self


class GateVerdict(BaseModel):
    """The quality gate's verdict on a draft; reasons never quote lead data or addresses."""

    passed: bool
    reasons: list[str]


class Spend(BaseModel):
    """LLM calls and what they cost (USD, an estimate from list prices; None once a call's
    model has no price, since the total is then unknown)."""

    llmCalls: int = 0
    promptTokens: int = 0
    completionTokens: int = 0
    costUsd: float | None = 0.0


class StepPreview(BaseModel):
    """What a run would do for this lead at this step, and what this preview paid to find out.

    `outcome` is the run's decision: `generated` sends `draft`, `fallback` sends `rendered`
    (the campaign's `onGenerationFailure` policy), `held` sends nothing yet; `reason` says why
    for the last two. `promptTokens`, `completionTokens` and `costUsd` are those of the draft,
    as its GeneratedMessage would record them, even when it came from the cache (`costUsd` None
    when the model has no price); `spent` is what this preview itself paid (nothing on a cache
    hit, both calls when the gate asked again).
    """

    campaignId: str
    stepOrder: int
    leadId: str | None  # None for an inline lead
    rendered: EmailDraft | None  # None when the lead was held before anything was rendered
    draft: EmailDraft | None  # the generator's answer the gate judged last
    gate: GateVerdict | None  # None when no draft was judged
    outcome: OutcomeKind
    reason: str | None
    model: str
    promptVersion: str
    inputHash: str | None
    variantKey: str | None = None  # the step variant a run would write this lead's email in
    offline: bool  # the template generator answered: no OPENAI_API_KEY
    cacheHit: bool
    promptTokens: int
    completionTokens: int
    costUsd: float | None
    spent: Spend


class _Meter:
    """Passes each call on and adds up what the real ones cost (a cache hit makes none)."""

    def __init__(self, inner: Generator) -> None:
        self._inner = inner
        self.spent = Spend()

    async def generate(self, messages: list[Message], *, model: str) -> Generation:
        try:
            generation = await self._inner.generate(messages, model=model)
        except LLMError as exc:
            self.spent.llmCalls += exc.attempts
            raise
        self.spent.llmCalls += generation.attempts
        self.spent.promptTokens += generation.prompt_tokens
        self.spent.completionTokens += generation.completion_tokens
        if self.spent.costUsd is not None and generation.cost_usd is not None:
            self.spent.costUsd += generation.cost_usd
        else:
            self.spent.costUsd = None
        return generation


async def preview_step(
    lead: DueLead, config: GenerationConfig, cache: GenerationCache
) -> StepPreview:
    """Generate `lead`'s email at its `stepOrder` as a run would, without writing anything."""
    offline = config.api_key is None
    prepared = prepare(lead, model=config.model)
    if isinstance(prepared, LeadOutcome):
        return _answer(lead, config, prepared, rendered=None, gate=None, spent=Spend())
    generator = config.open_generator()
    meter = _Meter(generator)
    try:
        outcome = await generate_for_lead(
            prepared, meter, NoCache() if offline else cache, model=config.model
        )
    finally:
        await generator.aclose()
    gate = None
    if outcome.generation is not None:
        # The gate again on the draft it judged last: its reasons as a list, not a sentence.
        judged = normalize_draft(outcome.generation.draft)
        reasons = check_draft(judged, rendered=prepared.trusted, rules=prepared.rules)
        gate = GateVerdict(passed=not reasons, reasons=reasons)
    return _answer(lead, config, outcome, rendered=prepared.rendered, gate=gate, spent=meter.spent)


def _answer(
    lead: DueLead,
    config: GenerationConfig,
    outcome: LeadOutcome,
    *,
    rendered: EmailDraft | None,
    gate: GateVerdict | None,
    spent: Spend,
) -> StepPreview:
    generation = outcome.generation
    return StepPreview(
        campaignId=lead.campaignId,
        stepOrder=lead.stepOrder,
        leadId=lead.leadId or None,
        rendered=rendered,
        draft=normalize_draft(generation.draft) if generation else None,
        gate=gate,
        outcome=outcome.kind,
        reason=outcome.reason,
        model=generation.model if generation else config.model,
        promptVersion=PROMPT_VERSION,
        inputHash=outcome.input_hash,
        variantKey=outcome.variant_key,
        offline=config.api_key is None,
        cacheHit=outcome.cache_hit,
        promptTokens=generation.prompt_tokens if generation else 0,
        completionTokens=generation.completion_tokens if generation else 0,
        costUsd=_rounded(generation.cost_usd) if generation else 0.0,
        spent=spent.model_copy(update={"costUsd": _rounded(spent.costUsd)}),
    )


def _rounded(usd: float | None) -> float | None:
    """To costUsd's own precision (NUMERIC(12, 6)); unknown stays None."""
    return None if usd is None else round(usd, 6)
