"""Prefect tasks of `pregenerate-upcoming-steps`: settle, read and submit Batch API jobs.

Order within a run: first the drafts no run will use are retired (their lead stopped or moved
on, or they outlived their window); then the batches whose submission was never recorded (a run
killed between `batches.create` and its commit) are found again by their metadata, or forgotten
when the API never received them; then finished batches are read; then the upcoming leads are
submitted.
"""

from collections import Counter
from datetime import datetime
from functools import partial

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel
from sqlalchemy.orm import Session

from core.failpoints import failpoint
from core.generation.batch_api import BatchAPI
from core.generation.config import GenerationConfig
from core.generation.generate import Prepared, prepare
from core.generation.pregenerate import (
    FINAL_STATUSES,
    BatchAnswer,
    batch_request,
    judge_answer,
    outlived_reason,
    read_result_lines,
    retire_before,
    split_requests,
    upcoming_window,
)
from core.ids import new_id
from core.statuses import BatchRequestStatus, GenerationBatchStatus
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.pregeneration import (
    OpenBatch,
    PendingRequest,
    RequestOutcome,
    current_leads,
    drop_unsubmitted,
    finish_batch,
    mark_submitted,
    open_batches,
    pending_requests,
    record_batch,
    retire_drafts,
    upcoming_leads,
)
from tasks.database import in_transaction


class PregenerationCounts(BaseModel):
    """What one run did, for its log and artifact."""

    adopted: int = 0  # batches submitted by a killed run, found again by their metadata
    dropped: int = 0  # batches recorded but never received by the API (their leads go again)
    still_open: int = 0
    finished: int = 0
    drafted: int = 0
    rejected: int = 0
    failed: int = 0
    stale: int = 0
    unused: int = 0
    # drafts no run will use, superseded with why (lead stopped or moved on, draft outlived)
    retired: int = 0
    considered: int = 0
    not_preparable: int = 0  # held at due time anyway (bad lead data, missing step...)
    submitted_requests: int = 0
    submitted_batches: int = 0


def _api(config: GenerationConfig) -> BatchAPI:
    assert config.api_key is not None  # the flow writes nothing ahead offline
    return BatchAPI(
        api_key=config.api_key,
        base_url=config.base_url,
        timeout=config.timeout_seconds,
        max_retries=config.max_retries,
    )


@task(name="settle-unrecorded-batches", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def settle_unrecorded_batches(
    database: DatabaseConfig, config: GenerationConfig, counts: PregenerationCounts
) -> PregenerationCounts:
    """Adopt each `preparing` batch the API has (by metadata), forget those it never got."""
    batches = [b for b in await in_transaction(database, open_batches) if b.openaiBatchId is None]
    if not batches:
        return counts
    api = _api(config)
    try:
        for batch in batches:
            found = await api.find(batch.id, created_after=batch.createdAt)
            if found is None:
                await in_transaction(database, partial(drop_unsubmitted, batch_id=batch.id))
                counts.dropped += 1
                continue
            submitted = partial(
                mark_submitted, batch_id=batch.id, openai_id=found, file_id=None, now=utcnow()
            )
            await in_transaction(database, submitted)
            counts.adopted += 1
    finally:
        await api.aclose()
    return counts


@task(name="read-finished-batches", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def read_finished_batches(
    database: DatabaseConfig, config: GenerationConfig, counts: PregenerationCounts
) -> PregenerationCounts:
    """Store each finished batch's gated answers as `pregenerated` drafts; settle the rest."""
    batches = [b for b in await in_transaction(database, open_batches) if b.openaiBatchId]
    logger = get_run_logger()
    api = _api(config)
    try:
        for batch in batches:
            assert batch.openaiBatchId is not None
            state = await api.state(batch.openaiBatchId)
            final = FINAL_STATUSES.get(state.status)
            if final is None:
                counts.still_open += 1
                continue
            # An expired or cancelled batch keeps the answers finished before; read them too.
            answers, unreadable = read_result_lines(await api.text(state.output_file_id))
            errors, unreadable_errors = read_result_lines(await api.text(state.error_file_id))
            if unreadable + unreadable_errors:
                logger.warning(
                    "batch %s: %d unreadable line(s); their leads generate when due",
                    batch.id,
                    unreadable + unreadable_errors,
                )
            outcomes = await _judge(database, config, batch, answers + errors, final)
            tally = Counter(o.status for o in outcomes)
            finish = partial(
                finish_batch,
                batch_id=batch.id,
                status=final,
                completed=state.completed,
                failed=state.failed,
                error=state.error,
                outcomes=outcomes,
                now=utcnow(),
            )
            drafted = await in_transaction(database, finish)
            counts.finished += 1
            counts.drafted += drafted
            counts.unused += tally[BatchRequestStatus.drafted] - drafted
            counts.rejected += tally[BatchRequestStatus.rejected]
            counts.failed += tally[BatchRequestStatus.failed]
            counts.stale += tally[BatchRequestStatus.stale]
            logger.info(
                "batch %s %s: %d drafted, %d rejected by the gate, %d failed, %d stale",
                batch.id,
                final.value,
                drafted,
                tally[BatchRequestStatus.rejected],
                tally[BatchRequestStatus.failed],
                tally[BatchRequestStatus.stale],
            )
    finally:
        await api.aclose()
    return counts


async def _judge(
    database: DatabaseConfig,
    config: GenerationConfig,
    batch: OpenBatch,
    answers: list[BatchAnswer],
    final: GenerationBatchStatus,
) -> list[RequestOutcome]:
    """Each pending request's outcome: its lead's input unchanged and the answer gated."""

    def load(session: Session) -> tuple[list[PendingRequest], dict[str, Prepared | None]]:
        requests = pending_requests(session, batch.id)
        leads = current_leads(session, [r.campaignLeadId for r in requests])
        prepared: dict[str, Prepared | None] = {}
        for lead_id, lead in leads.items():
            ready = prepare(lead, model=batch.model)
            prepared[lead_id] = ready if isinstance(ready, Prepared) else None
        return requests, prepared

    requests, prepared = await in_transaction(database, load)
    by_id = {answer.customId: answer for answer in answers}
    outcomes = []
    for request in requests:
        lead = prepared.get(request.campaignLeadId)
        answer = by_id.get(request.customId)
        if (
            lead is None
            or lead.lead.stepId != request.stepId
            or lead.input_hash != request.inputHash
        ):
            outcomes.append(
                RequestOutcome(
                    request.customId,
                    BatchRequestStatus.stale,
                    "the lead, its step, its data or its thread changed since submission",
                )
            )
        elif answer is None or answer.body is None:
            why = answer.error if answer else f"no answer (batch {final.value})"
            outcomes.append(RequestOutcome(request.customId, BatchRequestStatus.failed, why))
        else:
            judged = judge_answer(lead, answer.body, model=batch.model, prices=config.prices)
            if isinstance(judged, tuple):
                outcomes.append(RequestOutcome(request.customId, judged[0], judged[1]))
            else:
                outcomes.append(
                    RequestOutcome(
                        request.customId,
                        BatchRequestStatus.drafted,
                        draft=judged,
                        inputHash=request.inputHash,
                    )
                )
    return outcomes


@task(name="retire-unusable-drafts", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def retire_unusable_drafts(
    database: DatabaseConfig, counts: PregenerationCounts, *, max_days: float
) -> PregenerationCounts:
    """Supersede the drafts no run will use, each with why, in one short transaction.

    A draft whose campaign ended, whose lead stopped or moved to another step, or that was
    stored more than `max_days` + 1 day ago; never one whose lead a run holds a claim on.
    """
    now = utcnow()
    retire = partial(
        retire_drafts,
        now=now,
        before=retire_before(now, max_days=max_days),
        outlived=outlived_reason(max_days),
    )
    counts.retired += await in_transaction(database, retire)
    return counts


@task(name="submit-upcoming-leads", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def submit_upcoming_leads(
    database: DatabaseConfig,
    config: GenerationConfig,
    counts: PregenerationCounts,
    *,
    as_of: datetime,
    min_lead_hours: float,
    max_days: float,
    campaign_id: str | None,
    max_leads: int,
) -> PregenerationCounts:
    """Record, upload and submit the upcoming leads' requests, split within the API's limits.

    Each batch's requests are committed before the upload, so a run killed at any point submits
    no lead's input twice: the next run adopts or forgets the batch first.
    """
    earliest, latest = upcoming_window(as_of, min_lead_hours=min_lead_hours, max_days=max_days)
    upcoming = partial(
        upcoming_leads,
        earliest=earliest,
        latest=latest,
        now=utcnow(),
        limit=max_leads,
        campaign_id=campaign_id,
    )
    leads = await in_transaction(database, upcoming)
    counts.considered += len(leads)
    requests = []
    for lead in leads:
        prepared = prepare(lead, model=config.model)
        if isinstance(prepared, Prepared):
            requests.append(batch_request(prepared, model=config.model))
        else:
            counts.not_preparable += 1
    api = _api(config)
    try:
        for chunk in split_requests(requests):
            batch_id = new_id()
            record = partial(
                record_batch, batch_id=batch_id, model=config.model, now=utcnow(), requests=chunk
            )
            recorded = await in_transaction(database, record)
            chunk = [request for request in chunk if request.customId in recorded]
            if not chunk:
                continue
            file_id = await api.upload(batch_id, chunk)
            failpoint("pregeneration.after_upload")
            openai_id = await api.submit(batch_id, file_id)
            failpoint("pregeneration.after_submit")
            submitted = partial(
                mark_submitted,
                batch_id=batch_id,
                openai_id=openai_id,
                file_id=file_id,
                now=utcnow(),
            )
            await in_transaction(database, submitted)
            counts.submitted_batches += 1
            counts.submitted_requests += len(chunk)
    finally:
        await api.aclose()
    return counts
