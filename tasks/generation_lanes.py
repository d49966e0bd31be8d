"""Generation lanes: a `process-campaign-sends` run's due leads claimed, generated and written by
one lane per process, so that one run can use every core.

A lane claims a batch of due leads, generates it and writes it, `IN_FLIGHT_BATCHES` at a time,
until nothing is due or the run's budget of leads is spent. The flow's own process is the first
lane. The others run as one task each in a process pool (Prefect's `ProcessPoolTaskRunner`), and
only when many leads are due and the first process is out of CPU (`until_busy`): a process
takes seconds to start, and while the LLM's latency bounds the run it only splits the slots.
Lanes are kept apart
exactly as two runs are: each batch is leased under its own claim token and written fenced by
it, so a lane that dies loses nothing that a later run does not take over.

The run's `LLM_MAX_CONCURRENCY` is shared. The first lane starts with all of it, because the
others take seconds to start; once they are up, it gives them their share before they make a
call (`hand_over_slots`), so the run never has more calls in flight than the limit.
"""

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Semaphore
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectConcurrentFuture
from pydantic import BaseModel

from core.failpoints import failpoint
from core.generation.config import GenerationConfig
from core.generation.report import CampaignCounts, merge
from core.heap import freeze_startup_heap
from db.engine import DatabaseConfig
from tasks.generation import Claim, LLMSlots, claim_lead_batch, generate_messages, write_messages
from tasks.in_flight import InFlight
from tasks.unwalked import unwalked

# Batches generating at once in a lane: the next batch's LLM calls overlap the previous one's
# tail and write, while all of them share the lane's LLM concurrency.
IN_FLIGHT_BATCHES = 3
# How often a lane process looks for its parent (a killed flow run takes its lanes with it).
PARENT_CHECK_SECONDS = 0.5
# The windows in which this process's CPU is measured before other lanes start.
BUSY_WINDOW_SECONDS = 1.0
BUSY_WINDOWS = 2
# How often the first lane looks whether the other lanes are up, to hand them their slots.
READY_CHECK_SECONDS = 0.05


class LaneRun(BaseModel):
    """What every lane of a run is given: the same cutoff, campaign and batch size."""

    as_of: datetime
    campaign_id: str | None
    batch_size: int
    worker: str


class LeadBudget(Protocol):
    """The run's `max_leads`, taken a batch at a time by its lanes."""

    def take(self, wanted: int) -> int:
        """Up to `wanted` leads of what is left (0 when none)."""
        ...

    def give_back(self, unused: int) -> None:
        """A claim found fewer due leads than it took."""
        ...


class LocalBudget:
    """The budget of a run generating in one process."""

    def __init__(self, total: int) -> None:
        self._left = total

    def take(self, wanted: int) -> int:
        """Up to `wanted` of what is left."""
        taken = min(wanted, self._left)
        self._left -= taken
        return taken

    def give_back(self, unused: int) -> None:
        """Unclaimed leads go back to the budget."""
        self._left += unused


@dataclass(frozen=True)
class LaneSignals:
    """What the lane processes share with the flow's process; handed over at their start.

    `ready` is released once by each lane as it starts; `go` is set when the first lane has
    given up their share of the LLM slots; `budget` is the leads left to claim.
    """

    ready: Semaphore
    go: Event
    budget: "Synchronized[int]"
    parent_pid: int

    @classmethod
    def create(cls, max_leads: int) -> "LaneSignals":
        """Shared objects from the `spawn` context, the one Prefect's process pool starts with."""
        context = multiprocessing.get_context("spawn")
        return cls(
            ready=context.Semaphore(0),
            go=context.Event(),
            budget=context.Value("q", max_leads),
            parent_pid=os.getpid(),
        )


class SharedBudget:
    """The budget of a run generating in several processes: one counter, under its lock."""

    def __init__(self, budget: "Synchronized[int]") -> None:
        self._budget = budget

    def take(self, wanted: int) -> int:
        """Up to `wanted` of what is left, atomically across the lanes."""
        with self._budget.get_lock():
            taken = min(wanted, self._budget.value)
            self._budget.value -= taken
            return taken

    def give_back(self, unused: int) -> None:
        """Unclaimed leads go back to the budget."""
        if unused:
            with self._budget.get_lock():
                self._budget.value += unused

    def left(self) -> int:
        """The leads no lane has taken yet."""
        with self._budget.get_lock():
            return self._budget.value

    def close(self) -> None:
        """No lane claims again; the batches the lanes hold are still written."""
        with self._budget.get_lock():
            self._budget.value = 0


def lane_shares(max_concurrency: int, lanes: int) -> list[int]:
    """Each lane's LLM slots, the first lane's first; every lane gets at least one."""
    lanes = max(1, min(lanes, max_concurrency))
    share, extra = divmod(max_concurrency, lanes)
    return [share + extra] + [share] * (lanes - 1)


async def generate_due_leads(
    database: DatabaseConfig, config: GenerationConfig, run: LaneRun, budget: LeadBudget
) -> dict[str, CampaignCounts]:
    """One lane: claim due leads a batch at a time, generate each batch and write it."""
    counts: dict[str, CampaignCounts] = {}

    async def generate_and_write(claim: Claim) -> None:
        # unwalked(): Prefect would otherwise walk every lead looking for futures (1 ms a lead).
        outcomes = await generate_messages(unwalked(claim.leads), config)
        written = await write_messages(
            database, config, unwalked(claim), unwalked(outcomes), as_of=run.as_of
        )
        merge(counts, written)

    async with InFlight(IN_FLIGHT_BATCHES) as in_flight:
        while (size := budget.take(run.batch_size)) > 0:
            claim = await claim_lead_batch(
                database,
                config,
                as_of=run.as_of,
                limit=size,
                worker=run.worker,
                campaign_id=run.campaign_id,
                dry_run=False,
            )
            budget.give_back(size - len(claim.leads))
            if not claim.leads:
                break
            await in_flight.add(generate_and_write(claim))
    return counts


async def hand_over_slots(
    config: GenerationConfig,
    signals: LaneSignals,
    *,
    others: int,
    lent: int,
    gone: Callable[[], bool],
) -> None:
    """The first lane's side of the start, until cancelled when the run's lanes are done: once
    the `others` lanes are up, take `lent` slots from this process for them (waiting for calls
    in flight to finish), then let them call.

    A lane process that ended before it was up (`gone()`) is not waited for.
    """

    def go() -> None:
        signals.go.set()
        failpoint("generation.lanes_started")

    try:
        waiting = others
        while waiting and not gone():
            if signals.ready.acquire(block=False):
                waiting -= 1
            else:
                await asyncio.sleep(READY_CHECK_SECONDS)
        if not waiting:
            await LLMSlots(config).lend(lent, then=go)
    finally:
        # Whatever stopped the wait, the first lane is done with the slots the others need.
        signals.go.set()


def lane_counts(lane: PrefectConcurrentFuture[Any]) -> dict[str, CampaignCounts]:
    """A lane's counts once its process is done with it (blocks; a lane's error is raised)."""
    counts: dict[str, CampaignCounts] = lane.result()
    return counts


async def until_busy(share: float) -> float:
    """Return once this process has used at least `share` of a core in each of two windows in
    a row (0: at once), with the share it used in the last.

    Another process pays only when this one is out of CPU (a fast LLM). While the LLM's latency
    is what bounds the run, more processes only split its slots and cost the start.
    """
    if share <= 0:
        return 0.0
    busy, busy_windows = 0.0, 0
    cpu, wall = time.process_time(), time.monotonic()
    while busy_windows < BUSY_WINDOWS:
        await asyncio.sleep(BUSY_WINDOW_SECONDS)
        now_cpu, now_wall = time.process_time(), time.monotonic()
        busy = (now_cpu - cpu) / max(now_wall - wall, 1e-6)
        busy_windows = busy_windows + 1 if busy >= share else 0
        cpu, wall = now_cpu, now_wall
    return busy


_signals: LaneSignals | None = None


def start_lane_process(signals: LaneSignals) -> None:
    """Run once in each lane process as it starts: remember the signals, and exit when the
    flow's process is gone (a killed run must not leave lanes claiming and paying for leads)."""
    global _signals
    _signals = signals

    def exit_with_parent() -> None:
        while os.getppid() == signals.parent_pid:
            threading.Event().wait(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=exit_with_parent, name="lane-parent-watch", daemon=True).start()


def lane_signals() -> LaneSignals | None:
    """This lane process's signals.

    A function rather than the global itself: the task is pickled into the pool by value,
    with a copy of this module's globals taken in the flow's process, where there are none.
    """
    return _signals


@task(name="generation-lane", retries=0, cache_policy=NO_CACHE, persist_result=False)
async def generation_lane(
    database: DatabaseConfig, config: GenerationConfig, run: LaneRun
) -> dict[str, CampaignCounts]:
    """A lane in its own process; `config.max_concurrency` is its share of the run's slots."""
    signals = lane_signals()
    if signals is None:
        raise RuntimeError("generation-lane runs only in a process started by the flow's pool")
    freeze_startup_heap()
    signals.ready.release()
    while not signals.go.is_set():
        await asyncio.sleep(READY_CHECK_SECONDS)
    return await generate_due_leads(database, config, run, SharedBudget(signals.budget))
