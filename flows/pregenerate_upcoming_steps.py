"""The `pregenerate-upcoming-steps` flow: write upcoming steps ahead through the Batch API.

Daily, it reads the batches earlier runs submitted (their gated answers become `pregenerated`
drafts) and submits the leads whose next step falls due between `PREGENERATE_MIN_LEAD_HOURS`
and `PREGENERATE_MAX_DAYS` ahead, at half the synchronous price; hourly, a poll (`submit`
false) reads the batches that finished since. Every run also retires the drafts no run will
use (their lead stopped or moved on, or they outlived their window) as `superseded`, each with
why. When a lead comes due, `process-campaign-sends` uses its draft only if the content hash
still matches, and otherwise generates as always; whatever goes wrong here, a lead simply
generates synchronously.
"""

from datetime import datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from pydantic import Field

from core.generation.config import GenerationConfig
from db.engine import DatabaseConfig
from flows.cutoff import run_cutoff
from flows.settings import run_settings, warn_if_unpriced
from tasks.pregeneration import (
    PregenerationCounts,
    read_finished_batches,
    retire_unusable_drafts,
    settle_unrecorded_batches,
    submit_upcoming_leads,
)


@flow(name="pregenerate-upcoming-steps", log_prints=False)
async def pregenerate_upcoming_steps(
    as_of: datetime | None = None,
    campaign_id: str | None = None,
    max_leads: Annotated[int, Field(ge=1)] = 200_000,
    submit: bool = True,
) -> PregenerationCounts:
    """Read finished batches into drafts, retire the drafts no run will use, then submit the
    upcoming leads in new batches.

    Args:
        as_of: The moment the window counts from; empty means the run's scheduled start.
        campaign_id: Only this campaign's leads are submitted (every open batch is read, and
            every campaign's unusable drafts are retired).
        max_leads: Submit at most this many leads.
        submit: False only reads the finished batches and retires drafts (the hourly poll).
    """
    settings = run_settings()
    database = DatabaseConfig.from_settings(settings)
    config = GenerationConfig.from_settings(settings)
    logger = get_run_logger()
    # Before the key is looked at: drafts left by a key since removed can never be used either.
    counts = await retire_unusable_drafts(
        database, PregenerationCounts(), max_days=settings.pregenerate_max_days
    )
    if config.api_key is None:
        logger.info(
            "no OPENAI_API_KEY: the offline template writes every draft; %d unusable draft(s)"
            " retired, nothing else to do",
            counts.retired,
        )
        return counts
    warn_if_unpriced(config)
    cutoff = run_cutoff(as_of)
    counts = await settle_unrecorded_batches(database, config, counts)
    counts = await read_finished_batches(database, config, counts)
    if submit:
        counts = await submit_upcoming_leads(
            database,
            config,
            counts,
            as_of=cutoff,
            min_lead_hours=settings.pregenerate_min_lead_hours,
            max_days=settings.pregenerate_max_days,
            campaign_id=campaign_id,
            max_leads=max_leads,
        )
    await acreate_table_artifact(
        key="pregenerate-upcoming-steps",
        table=[counts.model_dump()],
        description=(
            f"Batches read and submitted, drafts retired; window counted from {cutoff.isoformat()}"
        ),
    )
    logger.info(
        "batches: %d adopted, %d dropped, %d still open, %d read (%d drafted, %d rejected, "
        "%d failed, %d stale, %d unused); %d unusable draft(s) retired; submitted %d leads in "
        "%d batches (%d considered, %d not preparable)",
        counts.adopted,
        counts.dropped,
        counts.still_open,
        counts.finished,
        counts.drafted,
        counts.rejected,
        counts.failed,
        counts.stale,
        counts.unused,
        counts.retired,
        counts.submitted_requests,
        counts.submitted_batches,
        counts.considered,
        counts.not_preparable,
    )
    return counts
