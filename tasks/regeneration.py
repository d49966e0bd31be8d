"""Prefect tasks of a step backfill: find the step, claim its scheduled sends, write new messages.

Generation itself is `tasks.generation.generate_messages`, the same task the normal run maps
over its batches.
"""

from prefect import get_run_logger
from pydantic import BaseModel
from sqlalchemy.orm import Session

from core.generation.config import GenerationConfig
from core.generation.generate import LeadOutcome
from core.generation.regeneration import StepSend, StepTarget, plan_rewrites, split_up_to_date
from core.generation.regeneration_report import StepCounts, count_batch
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.regeneration import StepPage, find_step, release_sends, replace_messages, step_page
from tasks.database import database_task, in_transaction


class StepClaim(BaseModel):
    """One page of a step's sends; token is None for a dry-run preview, which holds nothing.

    `sends` need a new message; `unchanged` (claimed too) already have the current one.
    `cursor` is None once the step has no sends left to look at.
    """

    campaign_id: str
    step: int
    token: str | None
    sends: list[StepSend]
    unchanged: list[StepSend]
    cursor: str | None
    not_scheduled: int = 0
    busy: int = 0

    @property
    def size(self) -> int:
        """Sends claimed (or previewed) by this page."""
        return len(self.sends) + len(self.unchanged)


@database_task("find-campaign-step")
async def find_campaign_step(
    database: DatabaseConfig, *, campaign_id: str, step_order: int
) -> StepTarget:
    """The step a backfill regenerates; `problem()` says why it cannot run, if it cannot."""
    return await in_transaction(
        database,
        lambda session: find_step(session, campaign_id=campaign_id, step_order=step_order),
    )


@database_task("claim-step-sends")
async def claim_step_sends(
    database: DatabaseConfig,
    config: GenerationConfig,
    *,
    target: StepTarget,
    after: str,
    limit: int,
    worker: str,
    dry_run: bool,
) -> StepClaim:
    """Claim (or, in a dry run, only preview) the scheduled sends of the step's next page."""
    assert target.step_id is not None
    step_id = target.step_id

    def claim(session: Session) -> StepPage:
        return step_page(
            session,
            campaign_id=target.campaign_id,
            step_id=step_id,
            after=after,
            limit=limit,
            now=utcnow(),
            worker=None if dry_run else worker,
            lease=None if dry_run else config.claim_lease,
        )

    page = await in_transaction(database, claim)
    stale, current = split_up_to_date(page.sends, model=config.model)
    return StepClaim(
        campaign_id=target.campaign_id,
        step=target.step_order,
        token=page.token,
        sends=stale,
        unchanged=current,
        cursor=page.cursor,
        not_scheduled=page.not_scheduled,
        busy=page.busy,
    )


@database_task("write-regenerated-messages", retries=3, retry_delay_seconds=[1, 5, 15])
async def write_regenerated(
    database: DatabaseConfig, claim: StepClaim, outcomes: list[LeadOutcome]
) -> StepCounts:
    """Replace a batch's messages in one transaction, fenced by its claim; release the rest.

    Sends that keep their message (held or unchanged) are released in the same transaction.
    """
    assert claim.token is not None
    token = claim.token
    rewrites, kept = plan_rewrites(claim.sends, outcomes)

    def write(session: Session) -> set[str]:
        written = replace_messages(session, token=token, now=utcnow(), rewrites=rewrites)
        claimed = [send.sendId for send in (*claim.sends, *claim.unchanged)]
        release_sends(session, token=token, send_ids=[i for i in claimed if i not in written])
        return written

    written = await in_transaction(database, write)
    counts = count_batch(
        claim.campaign_id,
        claim.step,
        claim.sends,
        outcomes,
        unchanged=len(claim.unchanged),
        written=written,
        kept_for_review={k.sendId for k in kept if k.for_review},
    )
    logger = get_run_logger()
    logger.info(
        "batch of %d: %d regenerated, %d unchanged, %d held, %d kept for review, "
        "%d changed meanwhile",
        claim.size,
        counts.regenerated,
        counts.unchanged,
        counts.held,
        counts.kept_for_review,
        counts.changed,
    )
    for send in kept:
        # Reasons name fields and rules, never addresses or bodies, so INFO is safe.
        logger.info("send %s keeps its message: %s", send.sendId, send.reason)
    return counts
