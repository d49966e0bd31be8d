"""The `process-campaign-sends` flow: due leads -> personalised messages -> scheduled sends."""

import asyncio
from contextlib import ExitStack
from datetime import datetime
from typing import Annotated, Any

import anyio
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.futures import PrefectConcurrentFuture
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner
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
from core.heap import freeze_startup_heap
from db.engine import DatabaseConfig
from flows.cutoff import run_cutoff
from flows.settings import run_settings, warn_if_unpriced
from tasks.generation import Claim, claim_lead_batch, count_due, generate_messages
from tasks.generation_lanes import (
    IN_FLIGHT_BATCHES,
    LaneRun,
    LaneSignals,
    LocalBudget,
    SharedBudget,
    generate_due_leads,
    generation_lane,
    hand_over_slots,
    lane_counts,
    lane_shares,
    start_lane_process,
    until_busy,
)
from tasks.in_flight import InFlight
from tasks.regeneration import (
    StepClaim,
    claim_step_sends,
    find_campaign_step,
    write_regenerated,
)
from tasks.review import claim_approved_sends, record_review_rejections, release_approved_sends
from tasks.unwalked import unwalked
from tasks.variants import select_variant_winners

# Other lanes start only when more than this many batches, and leads, are due: a process takes
# seconds to start, in which one lane gets through a thousand leads with a fast LLM.
LANES_FROM_BATCHES = 2
LANES_FROM_LEADS = 1_000


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
    freeze_startup_heap()
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

    run = LaneRun(as_of=cutoff, campaign_id=campaign_id, batch_size=batch_size, worker=worker)
    if dry_run:
        previews = await _preview_due_leads(database, config, run, counts, max_leads=max_leads)
        await _publish_previews(previews)
    else:
        lanes, busy = settings.generation_processes, settings.generation_processes_when_busy
        merge(counts, await _generate_due_leads(database, config, run, max_leads, lanes, busy))
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


async def _generate_due_leads(
    database: DatabaseConfig,
    config: GenerationConfig,
    run: LaneRun,
    max_leads: int,
    processes: int,
    when_busy: float,
) -> dict[str, CampaignCounts]:
    """The due leads, in this process alone, or, when more than two batches are due and this
    process is out of CPU (`when_busy`), in up to `processes` lanes: this process and the others
    in a process pool (`tasks.generation_lanes`).
    """
    enough = max(LANES_FROM_BATCHES * run.batch_size, LANES_FROM_LEADS)

    async def due_now() -> int:
        """Leads due and not claimed, counted no further than one past `enough`."""
        return await count_due(
            database, as_of=run.as_of, campaign_id=run.campaign_id, up_to=enough + 1
        )

    shares = [config.max_concurrency]
    if processes > 1 and max_leads > enough and await due_now() > enough:
        shares = lane_shares(config.max_concurrency, processes)
    if len(shares) == 1:
        return await generate_due_leads(database, config, run, LocalBudget(max_leads))
    logger = get_run_logger()
    signals = LaneSignals.create(max_leads)
    budget = SharedBudget(signals.budget)
    lanes: list[PrefectConcurrentFuture[Any]] = []

    async def start_lanes_when_busy(stack: ExitStack) -> None:
        """Start the other lanes once this process is out of CPU, then hand them their slots;
        cancelled when this process's lane is done."""
        busy = await until_busy(when_busy)
        if when_busy > 0:
            # Busy late in a run, another process would start for leads this one has nearly
            # done (at a share of 0 the lanes start at once, on the count above).
            left = min(await due_now(), budget.left())
            if left <= enough:
                logger.info(
                    "this process %.0f %% busy, but only %d leads left to claim: one lane",
                    100 * busy,
                    left,
                )
                return
        logger.info(
            "more than %d leads due and this process %.0f %% busy: generating in %d processes, "
            "with %s of the %d LLM slots",
            enough,
            100 * busy,
            len(shares),
            "/".join(map(str, shares)),
            config.max_concurrency,
        )
        pool = stack.enter_context(
            ProcessPoolTaskRunner(
                max_workers=len(shares) - 1, initializer=start_lane_process, initargs=(signals,)
            )
        )
        for number, share in enumerate(shares[1:], start=2):
            lane_config = config.model_copy(update={"max_concurrency": share})
            lane_run = run.model_copy(update={"worker": f"{run.worker}/lane-{number}"})
            lanes.append(
                pool.submit(
                    generation_lane, {"database": database, "config": lane_config, "run": lane_run}
                )
            )
        await hand_over_slots(
            config,
            signals,
            others=len(lanes),
            lent=sum(shares[1:]),
            gone=lambda: any(lane.wrapped_future.done() for lane in lanes),
        )

    with ExitStack() as stack:
        watch = asyncio.create_task(start_lanes_when_busy(stack))
        try:
            per_lane = [await generate_due_leads(database, config, run, budget)]
            watch.cancel()
            for lane in lanes:
                per_lane.append(await anyio.to_thread.run_sync(lane_counts, lane))
        except BaseException:
            # The pool waits for its lanes on the way out: let them finish what they hold, soon.
            budget.close()
            raise
        finally:
            watch.cancel()
            # A handover cancelled before it began never lets the others go: they would wait.
            signals.go.set()
    counts: dict[str, CampaignCounts] = {}
    for number, lane_counted in enumerate(per_lane, start=1):
        if len(per_lane) > 1:
            logger.info("lane %d claimed %d leads", number, totals(lane_counted).claimed)
        merge(counts, lane_counted)
    return counts


async def _preview_due_leads(
    database: DatabaseConfig,
    config: GenerationConfig,
    run: LaneRun,
    counts: dict[str, CampaignCounts],
    *,
    max_leads: int,
) -> list[tuple[Claim, list[LeadOutcome]]]:
    """A dry run: the leads a claim would take, generated batch by batch, nothing written."""
    previews: list[tuple[Claim, list[LeadOutcome]]] = []

    async def generate(claim: Claim) -> None:
        # unwalked(): Prefect would otherwise walk every lead looking for futures (1 ms a lead).
        outcomes = await generate_messages(unwalked(claim.leads), config)
        previews.append((claim, outcomes))
        merge(counts, count_batch(claim.leads, outcomes, written=set(), failed=set()))

    preview = await claim_lead_batch(
        database,
        config,
        as_of=run.as_of,
        limit=max_leads,
        worker=run.worker,
        campaign_id=run.campaign_id,
        dry_run=True,
    )
    async with InFlight(IN_FLIGHT_BATCHES) as in_flight:
        for start in range(0, len(preview.leads), run.batch_size):
            batch = Claim(token=None, leads=preview.leads[start : start + run.batch_size])
            await in_flight.add(generate(batch))
    return previews


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
