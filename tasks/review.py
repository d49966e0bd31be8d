"""Prefect tasks of review before send: release the messages people approved and record the
ones they rejected (`process-campaign-sends` runs them before claiming due leads), and read and
launch a campaign for its launch review (`review-campaign-sample`)."""

from datetime import datetime

from prefect import get_run_logger
from pydantic import BaseModel
from sqlalchemy.orm import Session

from core.generation.approval import ApprovedMessage, Release, SendBack, judge_approved
from core.generation.config import GenerationConfig
from core.generation.due_lead import DueLead
from core.generation.report import CampaignCounts, count_reviewed
from core.statuses import CampaignStatus
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.campaigns import get_campaign
from db.queries.mailboxes import launch_campaign
from db.queries.review import (
    WrittenVerdicts,
    claim_approved,
    record_rejections,
    sample_leads,
    write_verdicts,
)
from tasks.database import database_task, in_transaction


class ApprovedBatch(BaseModel):
    """Sends awaiting review whose message was approved, claimed by `token`."""

    token: str
    messages: list[ApprovedMessage]


@database_task("claim-approved-sends")
async def claim_approved_sends(
    database: DatabaseConfig,
    config: GenerationConfig,
    *,
    limit: int,
    worker: str,
    campaign_id: str | None,
) -> ApprovedBatch:
    """Claim the next sends whose message a person approved, with the delivery claim's lease."""

    def claim(session: Session) -> ApprovedBatch:
        claimed = claim_approved(
            session,
            now=utcnow(),
            limit=limit,
            worker=worker,
            lease=config.claim_lease,
            campaign_id=campaign_id,
        )
        return ApprovedBatch(token=claimed.token, messages=claimed.messages)

    return await in_transaction(database, claim)


@database_task("release-approved-sends", retries=3, retry_delay_seconds=[1, 5, 15])
async def release_approved_sends(
    database: DatabaseConfig, config: GenerationConfig, batch: ApprovedBatch, *, as_of: datetime
) -> dict[str, CampaignCounts]:
    """Check each approved text with the quality gate again; in one transaction, give the sends
    that pass their slot and move their leads on, and send the others back to review."""
    verdicts = [judge_approved(m, as_of=as_of, model=config.model) for m in batch.messages]
    releases = [v for v in verdicts if isinstance(v, Release)]
    send_backs = [v for v in verdicts if isinstance(v, SendBack)]

    def write(session: Session) -> WrittenVerdicts:
        return write_verdicts(
            session,
            token=batch.token,
            now=utcnow(),
            releases=releases,
            send_backs=send_backs,
            claimed=[m.sendId for m in batch.messages],
        )

    written = await in_transaction(database, write)
    logger = get_run_logger()
    logger.info(
        "approved messages: %d released, %d sent back to review, %d changed meanwhile",
        len(written.released),
        len(written.sent_back),
        len(batch.messages) - len(written.released) - len(written.sent_back),
    )
    for verdict in send_backs:
        if verdict.sendId in written.sent_back:
            # Gate problems never quote lead data or addresses, so INFO is safe.
            logger.info("send %s back to review: %s", verdict.sendId, verdict.reason)
    return count_reviewed(batch.messages, released=written.released, sent_back=written.sent_back)


@database_task("record-review-rejections")
async def record_review_rejections(
    database: DatabaseConfig, *, campaign_id: str | None
) -> dict[str, CampaignCounts]:
    """Write the rejections made since the last run onto their sends and waiting leads."""
    recorded = await in_transaction(
        database,
        lambda session: record_rejections(session, now=utcnow(), campaign_id=campaign_id),
    )
    if recorded:
        get_run_logger().info("rejections recorded: %d", sum(recorded.values()))
    return {c: CampaignCounts(campaign_id=c, rejected=n) for c, n in recorded.items()}


@database_task("read-sample-leads")
async def read_sample_leads(
    database: DatabaseConfig, *, campaign_id: str, step_order: int, limit: int
) -> list[DueLead]:
    """Up to limit enrolled leads of the campaign at that step, for a launch review's drafts."""
    return await in_transaction(
        database,
        lambda session: sample_leads(
            session, campaign_id=campaign_id, step_order=step_order, limit=limit, now=utcnow()
        ),
        rollback=True,
    )


@database_task("launch-campaign")
async def launch_reviewed_campaign(
    database: DatabaseConfig, *, campaign_id: str
) -> tuple[CampaignStatus | None, CampaignStatus | None]:
    """Make the campaign active if it is a draft or paused; its status before and after."""

    def launch(session: Session) -> tuple[CampaignStatus | None, CampaignStatus | None]:
        before = launch_campaign(session, campaign_id, now=utcnow())
        campaign = get_campaign(session, campaign_id)
        return before, CampaignStatus(campaign.status) if campaign else None

    return await in_transaction(database, launch)
