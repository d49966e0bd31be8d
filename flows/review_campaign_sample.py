"""The `review-campaign-sample` flow: launch approval in the Prefect UI.

It writes sample drafts of a campaign's step for a handful of its enrolled leads (a dry run:
nothing is written to the database or sent), shows them in a markdown artifact, and suspends
until a person resumes it in the Prefect UI with a `LaunchDecision`. Approved, the campaign
becomes active (from draft or paused); rejected, it is left as it was. The answer and the
reviewer's note are kept in the run's log and its `review-campaign-sample-decision` artifact.

A suspended run holds no process and no concurrency slot: resuming it starts the flow again
from the top, which writes the same drafts again (from the generation cache: no LLM call is
paid twice) and then receives the answer where it suspended.
"""

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.flow_runs import asuspend_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from core.generation.config import GenerationConfig
from core.generation.launch_review import decision_markdown, sample_markdown
from core.statuses import CampaignStatus
from db.engine import DatabaseConfig
from flows.settings import run_settings, warn_if_unpriced
from tasks.generation import generate_messages
from tasks.regeneration import find_campaign_step
from tasks.review import launch_reviewed_campaign, read_sample_leads
from tasks.unwalked import unwalked

# The suspension's key: the run started again after a resume finds its answer under it.
DECISION_KEY = "launch-decision"


class LaunchDecision(RunInput):
    """The reviewer's answer, the form the Prefect UI shows to resume the run."""

    approve: bool = Field(default=False, description="Make the campaign active.")
    note: str = Field(default="", description="Why: kept with the run, shown in its artifact.")


class LaunchReview(BaseModel):
    """What the review decided and did."""

    campaign_id: str
    approved: bool
    note: str
    status_before: CampaignStatus | None
    status_after: CampaignStatus | None


@flow(name="review-campaign-sample", log_prints=False)
async def review_campaign_sample(
    campaign_id: str,
    step_order: Annotated[int, Field(ge=1)] = 1,
    sample_size: Annotated[int, Field(ge=1, le=50)] = 5,
) -> LaunchReview:
    """Write sample drafts of a campaign's step, wait for a person's approval, launch.

    Args:
        campaign_id: The campaign to review.
        step_order: Which step's drafts to write (its stepOrder).
        sample_size: How many enrolled leads to write for (active ones first).
    """
    logger = get_run_logger()
    settings = run_settings()
    database = DatabaseConfig.from_settings(settings)
    config = GenerationConfig.from_settings(settings)
    warn_if_unpriced(config)
    target = await find_campaign_step(database, campaign_id=campaign_id, step_order=step_order)
    problem = target.problem()
    if problem is not None:
        raise ValueError(problem)
    leads = await read_sample_leads(
        database, campaign_id=campaign_id, step_order=step_order, limit=sample_size
    )
    if not leads:
        raise ValueError(
            f"campaign {campaign_id} has no enrolled leads to write a sample for; enrol some "
            "(`campaign-pipeline enroll`) and run the review again"
        )
    outcomes = await generate_messages(unwalked(leads), config)
    sample = sample_markdown(campaign_id, step_order, leads, outcomes)
    await acreate_markdown_artifact(
        key="review-campaign-sample",
        markdown=sample,
        description=f"Sample drafts of step {step_order} of campaign {campaign_id}",
    )
    logger.info("%d sample drafts written; waiting for a person's decision", len(outcomes))
    decision = await asuspend_flow_run(
        wait_for_input=LaunchDecision.with_initial_data(description=sample), key=DECISION_KEY
    )
    if decision is None:  # only without wait_for_input
        raise RuntimeError("the run was resumed without a decision")
    if decision.approve:
        before, after = await launch_reviewed_campaign(database, campaign_id=campaign_id)
    else:
        before = after = target.campaign_status
    # The note is the reviewer's own words about the campaign, so INFO is the right level.
    logger.info(
        "launch of campaign %s %s (status %s -> %s); note: %s",
        campaign_id,
        "approved" if decision.approve else "rejected",
        before,
        after,
        decision.note.strip() or "(none)",
    )
    await acreate_markdown_artifact(
        key="review-campaign-sample-decision",
        markdown=decision_markdown(
            campaign_id, approved=decision.approve, note=decision.note, before=before, after=after
        ),
        description=f"The launch decision on campaign {campaign_id}",
    )
    return LaunchReview(
        campaign_id=campaign_id,
        approved=decision.approve,
        note=decision.note,
        status_before=before,
        status_after=after,
    )
