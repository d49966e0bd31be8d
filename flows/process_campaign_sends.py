"""The `process-campaign-sends` flow: due leads -> personalised messages -> scheduled sends."""

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import Field

from core.generation import LeadOutcome
from core.generation_report import (
    CampaignCounts,
    count_batch,
    merge,
    summary_markdown,
    totals,
)
from core.settings import get_settings
from tasks.generation import (
    Claim,
    claim_due_leads,
    generate_messages,
    generation_config,
    write_messages,
)

# Batches generating at once: the next batch's LLM calls overlap the previous one's tail and
# write, while all of them share the run's LLM concurrency limit.
IN_FLIGHT_BATCHES = 3


def _as_of(as_of: datetime | None) -> datetime:
    """The run's cutoff: the given one, else the scheduled start, so a retry keeps its cutoff."""
    if as_of is not None:
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    scheduled = flow_run.scheduled_start_time
    return datetime.fromtimestamp(scheduled.timestamp(), tz=UTC)


@flow(name="process-campaign-sends", log_prints=False)
async def process_campaign_sends(
    as_of: Annotated[
        datetime | None, Field(description="Due cutoff; empty means the run's scheduled start.")
    ] = None,
    campaign_id: Annotated[str | None, Field(description="Only this campaign.")] = None,
    batch_size: Annotated[int, Field(ge=1, le=5000, description="Leads per claim.")] = 500,
    max_leads: Annotated[int, Field(ge=1, description="Stop after this many leads.")] = 100_000,
    dry_run: Annotated[
        bool, Field(description="Generate and preview in an artifact; write nothing.")
    ] = False,
) -> dict[str, CampaignCounts]:
    """Claim due leads in batches, personalise each with the LLM, schedule sends, advance leads."""
    logger = get_run_logger()
    cutoff = _as_of(as_of)
    settings = get_settings()
    config = generation_config()
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

    async def generate_and_write(claim: Claim) -> None:
        # quote(): Prefect would otherwise walk every lead looking for futures (1 ms a lead).
        outcomes = await generate_messages(quote(claim.leads), config)
        if dry_run:
            previews.append((claim, outcomes))
            merge(counts, count_batch(claim.leads, outcomes, written=set(), failed=set()))
            return
        merge(
            counts,
            await write_messages(
                quote(claim),
                quote(outcomes),
                as_of=cutoff,
                max_attempts=settings.max_generation_attempts,
            ),
        )

    remaining = max_leads
    running: set[asyncio.Task[None]] = set()
    try:
        if dry_run:
            preview = await claim_due_leads(
                as_of=cutoff, limit=max_leads, worker=worker, campaign_id=campaign_id, dry_run=True
            )
            for start in range(0, len(preview.leads), batch_size):
                batch = Claim(token=None, leads=preview.leads[start : start + batch_size])
                running.add(asyncio.create_task(generate_and_write(batch)))
        while remaining > 0 and not dry_run:
            claim = await claim_due_leads(
                as_of=cutoff,
                limit=min(batch_size, remaining),
                worker=worker,
                campaign_id=campaign_id,
                dry_run=False,
            )
            if not claim.leads:
                break
            remaining -= len(claim.leads)
            running.add(asyncio.create_task(generate_and_write(claim)))
            if len(running) >= IN_FLIGHT_BATCHES:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
        for finished in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(finished, BaseException):
                raise finished
    finally:
        for pending in running:
            pending.cancel()

    if dry_run:
        await _publish_previews(previews)
    await _publish_counts(counts, cutoff, dry_run)
    total = totals(counts)
    logger.info(
        "claimed %d, generated %d (%d cached), fell back %d, held %d, failed %d, scheduled %d",
        total.claimed,
        total.generated,
        total.cache_hits,
        total.fell_back,
        total.held,
        total.failed,
        total.scheduled,
    )
    return counts


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
