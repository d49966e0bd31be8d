"""The `process-campaign-sends` flow: due leads -> personalised messages -> scheduled sends."""

from datetime import datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.runtime import flow_run
from pydantic import Field

from core.generation import regeneration_report
from core.generation.config import GenerationConfig
from core.generation.generate import LeadOutcome
from core.generation.regeneration_report import StepCounts
from core.generation.report import (
    CampaignCounts,
    count_batch,
    merge,
    summary_markdown,
    totals,
)
from db.engine import DatabaseConfig
from flows.cutoff import run_cutoff
from flows.in_flight import InFlight
from flows.settings import run_settings, warn_if_unpriced
from flows.unwalked import unwalked
from tasks.generation import Claim, claim_lead_batch, generate_messages, write_messages
from tasks.regeneration import (
    StepClaim,
    claim_step_sends,
    find_campaign_step,
    write_regenerated,
)
from tasks.review import claim_approved_sends, record_review_rejections, release_approved_sends
from tasks.variants import select_variant_winners

# Batches generating at once: the next batch's LLM calls overlap the previous one's tail and
# write, while all of them share the run's LLM concurrency limit.
IN_FLIGHT_BATCHES = 3


@flow(name="process-campaign-sends", log_prints=False)
async def process_campaign_sends(
    as_of: datetime | None = None,
    campaign_id: str | None = None,
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 500,
    max_leads: Annotated[int, Field(ge=1)] = 100_000,
    dry_run: bool = False,
    regenerate_step: Annotated[int | None, Field(ge=1)] = None,
) -> dict[str, CampaignCounts] | dict[str, StepCounts]:
    """Claim due leads in batches, personalise each with the LLM, schedule sends, advance leads.

    First, each A/B test with `sendingRules.abTest.autoSelect` that has a winner now records it
    (every later lead of the step gets it); then the messages people approved in review become
    due sends, and their rejections are recorded (`_release_reviewed`); a dry run skips both.

    With `regenerate_step` it claims no leads: it backfills that step of `campaign_id` instead
    (see `_regenerate_step`).

    Args:
        as_of: Due cutoff; empty means the run's scheduled start.
        campaign_id: Only this campaign.
        batch_size: Leads per claim.
        max_leads: Stop after this many leads.
        dry_run: Generate and preview in an artifact; write nothing.
        regenerate_step: With campaign_id: regenerate this step's not-yet-sent messages
            (its stepOrder) with the step's current instructions; sent ones are untouched.
    """
    if regenerate_step is not None and not campaign_id:
        raise ValueError(
            "regenerate_step needs campaign_id: a backfill regenerates one step of one "
            "campaign (pass both, e.g. --param campaign_id=... --param regenerate_step=2)"
        )
    settings = run_settings()
    database = DatabaseConfig.from_settings(settings)
    config = GenerationConfig.from_settings(settings)
    warn_if_unpriced(config)
    if regenerate_step is not None and campaign_id is not None:
        return await _regenerate_step(
            database,
            config,
            campaign_id,
            regenerate_step,
            batch_size=batch_size,
            max_sends=max_leads,
            dry_run=dry_run,
        )
    logger = get_run_logger()
    cutoff = run_cutoff(as_of)
    worker = f"flow-run/{flow_run.id or 'local'}"
    logger.info(
        "due as of %s, campaign %s, batch %d, model %s%s",
        cutoff.isoformat(),
        campaign_id or "(all)",
        batch_size,
        config.model,
        " (dry run)" if dry_run else "",
    )
    counts: dict[str, CampaignCounts] = {}
    previews: list[tuple[Claim, list[LeadOutcome]]] = []
    if not dry_run:
        # Before the claim, so this run's leads already get a winner decided now.
        await select_variant_winners(database, campaign_id=campaign_id)
        # Before the due leads, so a lead whose approved follow-up is due at once goes today.
        await _release_reviewed(
            database,
            config,
            counts,
            cutoff,
            campaign_id=campaign_id,
            batch_size=batch_size,
            max_sends=max_leads,
            worker=worker,
        )

    async def generate_and_write(claim: Claim) -> None:
        # unwalked(): Prefect would otherwise walk every lead looking for futures (1 ms a lead).
        outcomes = await generate_messages(unwalked(claim.leads), config)
        if dry_run:
            previews.append((claim, outcomes))
            merge(counts, count_batch(claim.leads, outcomes, written=set(), failed=set()))
            return
        written = await write_messages(
            database, config, unwalked(claim), unwalked(outcomes), as_of=cutoff
        )
        merge(counts, written)

    remaining = max_leads
    async with InFlight(IN_FLIGHT_BATCHES) as in_flight:
        if dry_run:
            preview = await claim_lead_batch(
                database,
                config,
                as_of=cutoff,
                limit=max_leads,
                worker=worker,
                campaign_id=campaign_id,
                dry_run=True,
            )
            for start in range(0, len(preview.leads), batch_size):
                batch = Claim(token=None, leads=preview.leads[start : start + batch_size])
                await in_flight.add(generate_and_write(batch))
        while remaining > 0 and not dry_run:
            claim = await claim_lead_batch(
                database,
                config,
                as_of=cutoff,
                limit=min(batch_size, remaining),
                worker=worker,
                campaign_id=campaign_id,
                dry_run=False,
            )
            if not claim.leads:
                break
            remaining -= len(claim.leads)
            await in_flight.add(generate_and_write(claim))

    if dry_run:
        await _publish_previews(previews)
    await _publish_counts(counts, cutoff, dry_run)
    total = totals(counts)
    logger.info(
        "claimed %d, generated %d (%d cached), fell back %d, held %d, failed %d, scheduled %d "
        "(%d awaiting review); reviewed: released %d, sent back %d, rejected %d",
        total.claimed,
        total.generated,
        total.cache_hits,
        total.fell_back,
        total.held,
        total.failed,
        total.scheduled,
        total.awaiting_review,
        total.released,
        total.sent_back,
        total.rejected,
    )
    return counts


async def _release_reviewed(
    database: DatabaseConfig,
    config: GenerationConfig,
    counts: dict[str, CampaignCounts],
    cutoff: datetime,
    *,
    campaign_id: str | None,
    batch_size: int,
    max_sends: int,
    worker: str,
) -> None:
    """Review before send: the approved messages become due sends (once the gate passed their
    text again), and the rejected ones hold their leads with the reviewer's reason."""
    merge(counts, await record_review_rejections(database, campaign_id=campaign_id))
    remaining = max_sends
    while remaining > 0:
        batch = await claim_approved_sends(
            database,
            config,
            limit=min(batch_size, remaining),
            worker=worker,
            campaign_id=campaign_id,
        )
        if not batch.messages:
            break
        remaining -= len(batch.messages)
        merge(counts, await release_approved_sends(database, config, batch, as_of=cutoff))


async def _regenerate_step(
    database: DatabaseConfig,
    config: GenerationConfig,
    campaign_id: str,
    step_order: int,
    *,
    batch_size: int,
    max_sends: int,
    dry_run: bool,
) -> dict[str, StepCounts]:
    """The backfill: new messages for the step's scheduled sends, each keeping its slot.

    Pages through the step's sends, claiming the scheduled ones with the delivery claim's
    lease, so no delivery run hands one over while it is regenerated; generates them with the
    normal run's task, batch by batch; and in one transaction per batch supersedes each old
    message, inserts the new one and repoints the send, as long as the send is still claimed
    and still scheduled. Sends already sending or sent, or held by another run, are counted and
    left alone. A dry run previews the drafts and holds no claim.
    """
    logger = get_run_logger()
    target = await find_campaign_step(database, campaign_id=campaign_id, step_order=step_order)
    problem = target.problem()
    if problem is not None:
        raise ValueError(problem)
    worker = f"flow-run/{flow_run.id or 'local'}"
    logger.info(
        "regenerating step %d of campaign %s, batch %d, model %s%s",
        step_order,
        campaign_id,
        batch_size,
        config.model,
        " (dry run)" if dry_run else "",
    )
    counts = StepCounts(campaign_id=campaign_id, step=step_order)
    previews: list[tuple[StepClaim, list[LeadOutcome]]] = []

    async def regenerate_and_write(claim: StepClaim) -> None:
        outcomes: list[LeadOutcome] = []
        if claim.sends:
            # unwalked(): Prefect would otherwise walk every send looking for futures.
            outcomes = await generate_messages(unwalked([s.lead for s in claim.sends]), config)
        if dry_run:
            previews.append((claim, outcomes))
            counts.add(
                regeneration_report.count_batch(
                    campaign_id,
                    step_order,
                    claim.sends,
                    outcomes,
                    unchanged=len(claim.unchanged),
                    written=None,
                )
            )
            return
        counts.add(await write_regenerated(database, unwalked(claim), unwalked(outcomes)))

    after, remaining = "", max_sends
    async with InFlight(IN_FLIGHT_BATCHES) as in_flight:
        while remaining > 0:
            claim = await claim_step_sends(
                database,
                config,
                target=target,
                after=after,
                limit=min(batch_size, remaining),
                worker=worker,
                dry_run=dry_run,
            )
            if claim.cursor is None:
                break
            after = claim.cursor
            counts.busy += claim.busy
            counts.not_scheduled += claim.not_scheduled
            if not claim.size:
                continue
            remaining -= claim.size
            await in_flight.add(regenerate_and_write(claim))

    if dry_run:
        await _publish_regeneration_previews(previews)
    await _publish_regeneration_counts(counts, dry_run)
    logger.info(
        "step %d: claimed %d, regenerated %d (%d cached, %d fell back), unchanged %d, held %d, "
        "skipped %d (%d not scheduled, %d claimed by another run, %d changed meanwhile)",
        step_order,
        counts.claimed,
        counts.regenerated,
        counts.cache_hits,
        counts.fell_back,
        counts.unchanged,
        counts.held,
        counts.skipped,
        counts.not_scheduled,
        counts.busy,
        counts.changed,
    )
    return {campaign_id: counts}


async def _publish_regeneration_counts(counts: StepCounts, dry_run: bool) -> None:
    await acreate_table_artifact(
        key="process-campaign-sends-regenerate",
        table=[counts.model_dump()],
        description=f"Step {counts.step} of campaign {counts.campaign_id}: sends by outcome",
    )
    await acreate_markdown_artifact(
        key="process-campaign-sends-regenerate-summary",
        markdown=regeneration_report.summary_markdown(counts, dry_run=dry_run),
        description="What this backfill did",
    )


async def _publish_regeneration_previews(
    previews: list[tuple[StepClaim, list[LeadOutcome]]],
) -> None:
    """Dry-run previews of a backfill: each scheduled send's new draft, nothing written."""
    rows = []
    for claim, outcomes in previews:
        for send, outcome in zip(claim.sends, outcomes, strict=True):
            rows.append(
                {
                    "send": send.sendId,
                    "campaign_lead": send.lead.campaignLeadId,
                    "step": send.lead.stepOrder,
                    "outcome": outcome.kind.value,
                    "subject": outcome.draft.subject if outcome.draft else "",
                    "body": outcome.draft.body if outcome.draft else "",
                    "reason": outcome.reason or "",
                }
            )
        for send in claim.unchanged:
            rows.append(
                {
                    "send": send.sendId,
                    "campaign_lead": send.lead.campaignLeadId,
                    "step": send.lead.stepOrder,
                    "outcome": "unchanged",
                    "subject": "",
                    "body": "",
                    "reason": "already written from the current instructions",
                }
            )
    await acreate_table_artifact(
        key="process-campaign-sends-regenerate-preview",
        table=rows or [{"send": "(no scheduled sends)"}],
        description="Dry run: regenerated drafts, nothing written",
    )


async def _publish_counts(
    counts: dict[str, CampaignCounts], cutoff: datetime, dry_run: bool
) -> None:
    rows = [row.model_dump() for row in sorted(counts.values(), key=lambda r: r.campaign_id)]
    await acreate_table_artifact(
        key="process-campaign-sends",
        table=rows or [CampaignCounts(campaign_id="(none due)").model_dump()],
        description=f"Leads per campaign, due as of {cutoff.isoformat()}",
    )
    await acreate_markdown_artifact(
        key="process-campaign-sends-summary",
        markdown=summary_markdown(counts, as_of=cutoff.isoformat(), dry_run=dry_run),
        description="What this run did",
    )


async def _publish_previews(previews: list[tuple[Claim, list[LeadOutcome]]]) -> None:
    """Dry-run previews: the drafts an analyst asked to see, shown in the run's artifacts."""
    rows = []
    for claim, outcomes in previews:
        for lead, outcome in zip(claim.leads, outcomes, strict=True):
            rows.append(
                {
                    "campaign_lead": lead.campaignLeadId,
                    "step": lead.stepOrder,
                    "outcome": outcome.kind.value,
                    "subject": outcome.draft.subject if outcome.draft else "",
                    "body": outcome.draft.body if outcome.draft else "",
                    "reason": outcome.reason or "",
                }
            )
    await acreate_table_artifact(
        key="process-campaign-sends-preview",
        table=rows or [{"campaign_lead": "(none due)"}],
        description="Dry run: generated drafts, nothing written",
    )
