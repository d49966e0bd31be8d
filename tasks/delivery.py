"""Prefect tasks of `send-scheduled-emails`: rescue, check rules, claim due sends, deliver.

A batch is planned in one go (core.delivery.plan), then delivered in lanes, one per sending
mailbox, each lane on its own database connection and its own reused transport connection
(tasks.delivery_lane).
"""

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta

import anyio
from prefect import get_run_logger
from pydantic import BaseModel
from sqlalchemy.orm import Session

from core.delivery.accounts import mailbox_key
from core.delivery.config import DeliveryConfig
from core.delivery.lane import LaneSend, mailbox_lanes, plan_updates, split_ungapped
from core.delivery.plan import Decision, DueSend, delivery_rules_problem
from core.delivery.report import (
    COLUMNS,
    DeliveryReport,
    PlannedSend,
    UnknownSend,
    planned_sends,
)
from core.delivery.transport import TransportPool
from core.engagement.config import IngestionConfig
from core.failpoints import failpoint
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries import delivery as queries
from tasks.breakers import announce
from tasks.database import database_task, in_transaction
from tasks.delivery_lane import Lane, plan_batch, settle
from tasks.replies_first import read_replies_first
from tasks.sending_accounts import SendingAccounts, resolve_sending_accounts

# The run's lane transports, kept logged in from one batch to the next (`run_transports`).
_RUN_TRANSPORTS: ContextVar[TransportPool | None] = ContextVar("run_transports", default=None)


@asynccontextmanager
async def run_transports() -> AsyncIterator[None]:
    """Keep the lanes' SMTP connections open across the batches delivered inside, so each
    mailbox logs in once a run per connection, not once a batch; closed on the way out."""
    pool = TransportPool()
    reset = _RUN_TRANSPORTS.set(pool)
    try:
        yield
    finally:
        _RUN_TRANSPORTS.reset(reset)
        await anyio.to_thread.run_sync(pool.close)


class SendClaim(BaseModel):
    """A batch of due sends; token is None for a dry-run preview, which holds nothing."""

    token: str | None
    sends: list[DueSend]


@database_task("rescue-abandoned-sends")
async def rescue_abandoned_sends(database: DatabaseConfig) -> list[UnknownSend]:
    """Handovers whose worker vanished become `unknown`, listed for the operator."""
    unknown = await in_transaction(
        database, lambda session: queries.rescue_abandoned_sends(session, now=utcnow())
    )
    for send in unknown:
        get_run_logger().warning("send %s outcome unknown: %s", send.send_id, send.reason)
    return unknown


@database_task("check-sending-rules")
async def check_sending_rules(
    database: DatabaseConfig, *, cutoff: datetime, campaign_id: str | None, dry_run: bool
) -> dict[str, tuple[str, int]]:
    """Campaigns whose sendingRules cannot be used, with why and how many due sends wait.

    Their sends keep their status and get the reason written on them; other campaigns carry on.
    """

    def check(session: Session) -> dict[str, tuple[str, int]]:
        blocked: dict[str, tuple[str, int]] = {}
        for campaign, raw in queries.campaign_rules(session, campaign_id).items():
            problem = delivery_rules_problem(raw)
            if problem is None:
                continue
            waiting = 0
            if not dry_run:
                waiting = queries.mark_blocked(
                    session, campaign_id=campaign, reason=problem, cutoff=cutoff
                )
            blocked[campaign] = (problem, waiting)
        return blocked

    blocked = await in_transaction(database, check)
    for campaign, (problem, waiting) in blocked.items():
        if waiting:
            get_run_logger().warning(
                "campaign %s: %d due sends paused: %s", campaign, waiting, problem
            )
    return blocked


@database_task("claim-due-sends")
async def claim_due_sends(
    database: DatabaseConfig,
    *,
    cutoff: datetime,
    limit: int,
    worker: str,
    lease_seconds: int,
    campaign_id: str | None,
    blocked: list[str],
    dry_run: bool,
) -> SendClaim:
    """Claim (or, in a dry run, only preview) the next batch of due sends."""

    def claim(session: Session) -> SendClaim:
        if dry_run:
            sends = queries.preview_due_sends(
                session,
                cutoff=cutoff,
                now=utcnow(),
                limit=limit,
                campaign_id=campaign_id,
                blocked=blocked,
            )
            return SendClaim(token=None, sends=sends)
        token, sends = queries.claim_due_sends(
            session,
            cutoff=cutoff,
            now=utcnow(),
            limit=limit,
            worker=worker,
            lease=timedelta(seconds=lease_seconds),
            campaign_id=campaign_id,
            blocked=blocked,
        )
        return SendClaim(token=token, sends=sends)

    claimed = await in_transaction(database, claim)
    failpoint("delivery.after_claim")
    return claimed


@database_task("preview-deliveries", retries=0)
async def preview_deliveries(
    claim: SendClaim, database: DatabaseConfig, *, deadline: datetime
) -> list[PlannedSend]:
    """A dry run's plan: which sends would leave when, and why the others would wait."""

    accounts = await resolve_sending_accounts(database, claim.sends, None, now=utcnow())

    def preview(session: Session) -> list[PlannedSend]:
        now = utcnow()
        decisions = plan_batch(
            session, claim.sends, now=now, deadline=deadline, mailboxes=accounts.states
        )
        return planned_sends(decisions, claim.sends)

    # Rolled back: planning creates the day's counter rows, and a dry run writes nothing.
    return await in_transaction(database, preview, rollback=True)


@database_task("deliver-sends", retries=0)
async def deliver_sends(
    claim: SendClaim,
    database: DatabaseConfig,
    config: DeliveryConfig,
    replies: IngestionConfig,
    *,
    deadline: datetime,
) -> DeliveryReport:
    """Read the mailboxes' new replies, plan a claimed batch, settle what cannot go now, and
    deliver the rest, lane by lane.

    Never retried by Prefect: a half-delivered batch must not be handed over again; what it
    left claimed returns to the pool when the lease expires, and `sending` rows become unknown
    (a lane that loses its database connection first writes what it knows: see `Lane._salvage`).
    """
    assert claim.token is not None
    token = claim.token
    logger = get_run_logger()
    report = DeliveryReport()
    sends = {s.sendId: s for s in claim.sends}
    accounts = await resolve_sending_accounts(database, claim.sends, config.transport, now=utcnow())
    # Property 16: replies that reached a mailbox stop their leads before it sends again.
    await read_replies_first(database, replies, accounts, connections=config.max_connections)

    def plan(session: Session) -> list[Decision]:
        now = utcnow()
        decisions = plan_batch(
            session, claim.sends, now=now, deadline=deadline, mailboxes=accounts.states
        )
        settle(session, token, now, plan_updates(decisions), report, sends)
        return decisions

    decisions = await in_transaction(database, plan)
    queues = split_ungapped(mailbox_lanes(sends, decisions), config.max_connections)
    transports = _RUN_TRANSPORTS.get()
    lanes = [
        _lane(queue, token, database, config, accounts, logger, transports) for queue in queues
    ]
    try:
        await anyio.to_thread.run_sync(_run_lanes, lanes, queues, config.max_connections)
    finally:
        # The pauses the lanes' bounces made, announced from the task once their threads are done.
        announce([trip for lane in lanes for trip in lane.trips], logger)
    for lane in lanes:
        report.merge(lane.report)
    failpoint("delivery.after_commit")
    logger.info(
        "batch of %d: %s",
        len(claim.sends),
        ", ".join(f"{report.total(column)} {column}" for column in COLUMNS),
    )
    return report


def _lane(
    queue: list[LaneSend],
    token: str,
    database: DatabaseConfig,
    config: DeliveryConfig,
    accounts: SendingAccounts,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    transports: TransportPool | None,
) -> Lane:
    """A lane on its mailbox's own SMTP login when it has a `Mailbox` row, else the global one."""
    first = queue[0]
    assert first.decision.mailbox is not None  # a lane only holds sends the plan gave a mailbox
    key = mailbox_key(first.send.workspaceId, first.decision.mailbox.email)
    transport = accounts.transports.get(key)
    return Lane(
        token=token,
        database=database,
        config=config if transport is None else config.model_copy(update={"transport": transport}),
        logger=logger,
        mailbox_id=accounts.ids.get(key),
        mailboxes=accounts.states,
        transports=transports,
    )


def _run_lanes(lanes: list[Lane], queues: list[list[LaneSend]], connections: int) -> None:
    """Every lane on a thread of its own, at most `connections` at a time."""
    with ThreadPoolExecutor(
        min(connections, len(queues)) or 1, thread_name_prefix="delivery-lane"
    ) as pool:
        futures = [pool.submit(lane.run, queue) for lane, queue in zip(lanes, queues, strict=True)]
        for future in futures:
            future.result()
