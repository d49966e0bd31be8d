"""Prefect tasks of `process-campaign-sends`: claim due leads, generate their messages, write."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

import anyio
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import rate_limit
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.results import ResultStore, aget_default_result_storage, get_result_store
from prefect.settings import get_current_settings
from pydantic import BaseModel
from sqlalchemy.orm import Session

from core.failpoints import failpoint
from core.generation.config import GenerationConfig
from core.generation.due_lead import DueLead
from core.generation.generate import (
    GenerationCache,
    Hold,
    LeadOutcome,
    MessageWrite,
    NoCache,
    Prepared,
    generate_for_lead,
    plan_writes,
    prepare,
)
from core.generation.llm import Generation, Generator
from core.generation.prompt import Message
from core.generation.report import CampaignCounts, count_batch
from core.generation.review import first_reviewed_steps
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.claims import claim_due_leads, count_due_leads, preview_due_leads
from db.queries.generation import count_step_messages, hold_leads, record_messages
from tasks.database import database_task, in_transaction
from tasks.llm_loop import on_llm_loop

# Leads prepared and looked up at a time before their calls start: the LLM slots' worth.
PREPARE_SLICE = 64
# v2 since Generation records cached tokens and pricing: a v1 answer, pickled without them,
# would unpickle with those attributes missing.
CACHE_PREFIX = "generation-v2-"
Answer = TypeVar("Answer")
T = TypeVar("T")


class Claim(BaseModel):
    """A batch of due leads; token is None for a dry-run preview, which holds nothing."""

    token: str | None
    leads: list[DueLead]


class StoredAnswers(Generic[Answer]):
    """Finished LLM answers in Prefect's result storage, keyed by their content hash.

    One lookup of a slice's keys at a time, from one worker thread; each answer is written the
    moment it arrives, synchronously (about 0.3 ms), so a worker killed mid-batch loses no
    finished work. A thread hop per call cost four times that in CPU and GIL contention.
    """

    def __init__(self, store: ResultStore, *, prefix: str, kind: type[Answer]) -> None:
        self._store = store
        self._prefix = prefix  # one prefix per kind of answer, so their keys never meet
        self._kind = kind
        self._known: dict[str, Answer | None] = {}

    async def load(self, keys: list[str]) -> None:
        """Look every key up at once; later gets for these keys need no I/O."""
        self._known.update(await anyio.to_thread.run_sync(self._read_all, keys))

    def _read_all(self, keys: list[str]) -> dict[str, Answer | None]:
        found: dict[str, Answer | None] = {}
        for key in keys:
            stored = None
            if self._store.exists(self._prefix + key):
                result = self._store.read(self._prefix + key).result
                stored = result if isinstance(result, self._kind) else None
            found[key] = stored
        return found

    async def get(self, key: str) -> Answer | None:
        """A stored answer, or None (a key not loaded yet is looked up now)."""
        if key not in self._known:
            await self.load([key])
        return self._known[key]

    async def put(self, key: str, answer: Answer) -> None:
        """Persist an answer so no retry or re-run pays for it again."""
        self._store.write(obj=answer, key=self._prefix + key)
        self._known[key] = answer


class ResultStoreCache(StoredAnswers[Generation]):
    """Finished generations in Prefect's result storage, keyed by the content hash."""

    def __init__(self, store: ResultStore) -> None:
        super().__init__(store, prefix=CACHE_PREFIX, kind=Generation)


async def cache_outside_runs() -> Callable[[], ResultStoreCache]:
    """The flows' generation cache, for a process that is no flow run: the previews.

    The result storage is resolved once, now, as a flow run resolves it: the block named by
    PREFECT_DEFAULT_RESULT_STORAGE_BLOCK, or the Prefect server's default, or the local path.
    Without PREFECT_API_URL there is no server to ask (a flow run would start a temporary one,
    which has no default either), so the local path is taken at once. Each call of the result
    gives a fresh cache over that storage: one per preview, so nothing is remembered between
    previews but what the storage holds.
    """
    settings = get_current_settings()
    storage: WritableFileSystem
    if settings.api.url is None and settings.results.default_storage_block is None:
        storage = LocalFileSystem(basepath=str(settings.results.local_storage_path))
    else:
        storage = await aget_default_result_storage()
    return lambda: ResultStoreCache(ResultStore(result_storage=storage))


class _LoopSlots:
    """The LLM slots of one run's event loop: a semaphore, and the slots it owes to a lender.
    They are taken and given back on the LLM loop (`tasks.llm_loop`) only.

    While slots are owed, a slot given back goes to the lender instead of the next waiting
    call, so a lender is served before the whole queue of waiting calls.
    """

    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.owed = 0
        self.paid = asyncio.Event()

    def release(self) -> None:
        if self.owed:
            self.owed -= 1
            if not self.owed:
                self.paid.set()
        else:
            self.semaphore.release()


# One limit per run's event loop: every batch of a run shares the same LLM slots.
_slots: "WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSlots]" = WeakKeyDictionary()


class LLMSlots:
    """A slot (and a rate-limit token, if configured) for each real LLM call of a run, whatever
    it asks: drafts and reply classifications share `LLM_MAX_CONCURRENCY` and the rate limit."""

    def __init__(self, config: GenerationConfig) -> None:
        self._rate_limit = config.rate_limit_name
        loop = asyncio.get_running_loop()
        self._slots = _slots.setdefault(loop, _LoopSlots(config.max_concurrency))

    async def call(self, make_call: Callable[[], Awaitable[T]]) -> T:
        """Make one LLM call, `make_call()`, on the LLM loop, once a slot (and a rate-limit
        token) is free there; the slot goes to the next call the moment the answer is in."""

        async def in_a_slot() -> T:
            async with self._held():
                return await make_call()

        return await on_llm_loop(in_a_slot)

    async def lend(self, count: int, *, then: Callable[[], None]) -> None:
        """Take `count` slots away from this process, ahead of the calls waiting for one (other
        processes of the run call with them), call `then` once they are all taken, and hold
        them until cancelled."""
        await on_llm_loop(lambda: self._lend(count, then=then))

    async def _lend(self, count: int, *, then: Callable[[], None]) -> None:
        slots = self._slots
        taken = 0  # the slots this lender holds
        try:
            while taken < count and not slots.semaphore.locked():
                await slots.semaphore.acquire()  # a free slot: returns at once
                taken += 1
            if taken < count:
                slots.owed, slots.paid = count - taken, asyncio.Event()
                try:
                    await slots.paid.wait()
                finally:
                    taken = count - slots.owed
                    slots.owed = 0
            then()
            await asyncio.Event().wait()
        finally:
            for _ in range(taken):
                slots.semaphore.release()

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        """Wait for a slot and a rate-limit token; the call runs inside."""
        await self._slots.semaphore.acquire()
        try:
            if self._rate_limit:
                await rate_limit(self._rate_limit, strict=False)
            yield
        finally:
            self._slots.release()


class LimitedGenerator:
    """Holds a slot (and a rate-limit token, if configured) for each real LLM call."""

    def __init__(self, inner: Generator, config: GenerationConfig) -> None:
        self._inner = inner
        self._slots = LLMSlots(config)

    async def generate(self, messages: list[Message], *, model: str) -> Generation:
        """One call, within the concurrency and rate limits."""
        return await self._slots.call(lambda: self._inner.generate(messages, model=model))


@database_task("claim-due-leads")
async def claim_lead_batch(
    database: DatabaseConfig,
    config: GenerationConfig,
    *,
    as_of: datetime,
    limit: int,
    worker: str,
    campaign_id: str | None,
    dry_run: bool,
) -> Claim:
    """Claim (or, in a dry run, only preview) the next batch of due leads."""

    def claim(session: Session) -> Claim:
        if dry_run:
            leads = preview_due_leads(
                session, as_of=as_of, now=utcnow(), limit=limit, campaign_id=campaign_id
            )
            return Claim(token=None, leads=leads)
        token, leads = claim_due_leads(
            session,
            as_of=as_of,
            now=utcnow(),
            limit=limit,
            worker=worker,
            lease=config.claim_lease,
            campaign_id=campaign_id,
        )
        return Claim(token=token, leads=leads)

    claimed = await in_transaction(database, claim)
    failpoint("generation.after_claim")
    return claimed


@database_task("count-due-leads")
async def count_due(
    database: DatabaseConfig, *, as_of: datetime, campaign_id: str | None, up_to: int
) -> int:
    """How many leads are due now, counted no further than `up_to`."""

    def count(session: Session) -> int:
        return count_due_leads(
            session, as_of=as_of, now=utcnow(), limit=up_to, campaign_id=campaign_id
        )

    return await in_transaction(database, count)


@task(
    name="generate-messages",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def generate_messages(leads: list[DueLead], config: GenerationConfig) -> list[LeadOutcome]:
    """Generate every lead of a batch concurrently; one lead's failure never stops the others.

    Leads are prepared and looked up in the result store a slice at a time, and each slice's
    calls start before the next slice is prepared: a run's first calls leave about 0.1 s after
    its first claim instead of the 0.4 s that preparing and looking up 500 leads took.
    """
    inner = config.open_generator()
    cache: GenerationCache = (
        NoCache() if config.api_key is None else ResultStoreCache(get_result_store())
    )
    generator = LimitedGenerator(inner, config)

    async def one(lead: Prepared | LeadOutcome) -> LeadOutcome:
        if isinstance(lead, LeadOutcome):
            return lead
        return await generate_for_lead(lead, generator, cache, model=config.model)

    try:
        async with asyncio.TaskGroup() as leads_in_flight:
            generating: list[asyncio.Task[LeadOutcome]] = []
            for start in range(0, len(leads), PREPARE_SLICE):
                leads_now = leads[start : start + PREPARE_SLICE]
                prepared = [prepare(lead, model=config.model) for lead in leads_now]
                if isinstance(cache, ResultStoreCache):
                    await cache.load([p.input_hash for p in prepared if isinstance(p, Prepared)])
                generating.extend(leads_in_flight.create_task(one(p)) for p in prepared)
                await asyncio.sleep(0)  # this slice's calls start before the next is prepared
        return [lead.result() for lead in generating]
    finally:
        await on_llm_loop(inner.aclose)


@database_task("write-messages", retries=3, retry_delay_seconds=[1, 5, 15])
async def write_messages(
    database: DatabaseConfig,
    config: GenerationConfig,
    claim: Claim,
    outcomes: list[LeadOutcome],
    *,
    as_of: datetime,
) -> dict[str, CampaignCounts]:
    """Write a batch in one transaction, fenced by its claim; returns its per-campaign counts.

    Every lead is either progressed (or, awaiting review, kept at its step) or held, and both
    statements clear its claim.
    """
    assert claim.token is not None
    token = claim.token
    reviewed_steps = first_reviewed_steps(claim.leads)
    failpoint("generation.before_write")

    def write(session: Session) -> tuple[list[MessageWrite], list[Hold], set[str], set[str]]:
        now = utcnow()
        # Counted in the writing transaction, so a step's first messages are those written
        # first; two batches counting at once both count low, which only reviews more.
        writes, holds = plan_writes(
            claim.leads,
            outcomes,
            as_of=as_of,
            max_attempts=config.max_attempts,
            step_messages=count_step_messages(session, reviewed_steps),
        )
        written = record_messages(session, token=token, now=now, writes=writes)
        held = hold_leads(session, token=token, now=now, holds=holds)
        # Every statement ran, the EmailSend rows included; only the commit is missing.
        failpoint("generation.after_insert")
        return writes, holds, written, held

    writes, holds, written, held = await in_transaction(database, write)
    failpoint("generation.after_write")
    failed = {hold.campaignLeadId for hold in holds if hold.give_up} & held
    lost = len(claim.leads) - len(written) - len(held)
    awaiting = {w.campaignLeadId for w in writes if w.reviewReason is not None} & written
    logger = get_run_logger()
    logger.info(
        "batch of %d: %d scheduled, %d held, %d failed, %d taken over by another worker; "
        "%d of the scheduled await review",
        len(claim.leads),
        len(written),
        len(held) - len(failed),
        len(failed),
        lost,
        len(awaiting),
    )
    for hold in holds:
        if hold.campaignLeadId in held:
            # Reasons name fields and rules, never addresses or bodies, so INFO is safe.
            logger.log(
                logging.WARNING if hold.give_up else logging.INFO,
                "lead %s held: %s",
                hold.campaignLeadId,
                hold.reason,
            )
    return count_batch(
        claim.leads, outcomes, written=written, failed=failed, awaiting_review=awaiting
    )
