"""`campaign-pipeline campaign preview`: the preview endpoint's answer, in a terminal."""

import asyncio
from typing import Annotated

import typer

from cli.context import connect, fail, out
from core.generation.config import GenerationConfig
from core.generation.draft import EmailDraft
from core.generation.due_lead import DueLead
from core.generation.generate import GenerationCache, NoCache, OutcomeKind
from core.generation.preview import PreviewNotFoundError, StepPreview, preview_step
from core.settings import get_settings
from db.base import utcnow
from db.queries.preview import preview_lead

_OUTCOMES = {
    OutcomeKind.generated: "generated: a run would send the draft",
    OutcomeKind.fallback: "fallback: a run would send the rendered template",
    OutcomeKind.held: "held: a run would send nothing yet",
}


def campaign_preview(
    campaign_id: Annotated[str, typer.Option("--campaign", help="Campaign id.")],
    step: Annotated[int, typer.Option("--step", min=1, help="The step's stepOrder.")],
    lead: Annotated[
        str, typer.Option("--lead", help="The lead's address, in the campaign's workspace.")
    ],
) -> None:
    """Generate one lead's email at one step as a run would (same prompt, gate and cache);
    nothing is written."""
    database = connect()
    try:
        with database.sessions() as session:
            due = preview_lead(
                session, campaign_id=campaign_id, step_order=step, now=utcnow(), email=lead
            )
    except PreviewNotFoundError as exc:
        raise fail(f"{exc}; nothing was generated") from None
    preview = asyncio.run(_preview(due, GenerationConfig.from_settings(get_settings())))
    show(preview, due.email)


async def _preview(lead: DueLead, config: GenerationConfig) -> StepPreview:
    cache: GenerationCache = NoCache()
    if config.api_key is not None:
        # The flows' result storage: Prefect is imported only when a draft may be paid for.
        from tasks.generation import cache_outside_runs

        cache = (await cache_outside_runs())()
    return await preview_step(lead, config, cache)


def _email(title: str, draft: EmailDraft) -> None:
    out.print(f"[bold]{title}[/bold]")
    # Lead data and LLM text are printed as they are: no rich markup or emoji codes in them.
    out.print(f"subject: {draft.subject}", markup=False, emoji=False)
    out.print(draft.body, markup=False, emoji=False)
    out.print()


def show(preview: StepPreview, address: str) -> None:
    """The preview, section by section, in the order the endpoint's answer has them."""
    out.print(
        f"campaign {preview.campaignId}, step {preview.stepOrder},"
        f" lead {address} (id {preview.leadId})"
        + (f", variant {preview.variantKey}" if preview.variantKey else ""),
        markup=False,
    )
    out.print()
    if preview.rendered is not None:
        _email("rendered template", preview.rendered)
    if preview.draft is not None:
        source = "offline template generator" if preview.offline else preview.model
        _email(f"draft ({source})", preview.draft)
    if preview.gate is not None:
        out.print("quality gate: " + ("passed" if preview.gate.passed else "failed"))
        for reason in preview.gate.reasons:
            out.print(f"  - {reason}", markup=False)
    outcome = _OUTCOMES[preview.outcome]
    out.print(
        f"outcome: {outcome}" + (f" ({preview.reason})" if preview.reason else ""), markup=False
    )
    out.print(
        f"draft: {preview.promptTokens} prompt + {preview.completionTokens} completion tokens,"
        f" {_usd(preview.costUsd, preview.model)} (model {preview.model},"
        f" prompt {preview.promptVersion})"
    )
    spent = preview.spent
    if preview.offline:
        note = "offline: no OPENAI_API_KEY, so the rendered template is the draft, free"
    elif preview.cacheHit:
        note = "from the cache"
    else:
        note = "generated now"
    out.print(
        f"this preview: {spent.llmCalls} LLM calls, {spent.promptTokens} prompt +"
        f" {spent.completionTokens} completion tokens, {_usd(spent.costUsd, preview.model)}"
        f" ({note})"
    )


def _usd(cost: float | None, model: str) -> str:
    """A cost, or why there is none: the model has no price."""
    if cost is None:
        return f"cost unknown (no price for {model}: add it to OPENAI_PRICES)"
    return f"${cost:.6f}"
