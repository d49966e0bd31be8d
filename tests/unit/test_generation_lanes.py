"""The pieces generation lanes share: slot shares, the leads budget, and lending slots."""

import asyncio
import threading
import time

import pytest

from core.generation.config import GenerationConfig
from tasks import generation_lanes
from tasks.generation import LLMSlots
from tasks.generation_lanes import LaneSignals, LocalBudget, SharedBudget, lane_shares
from tests.support.calls_at_once import CallsAtOnce


@pytest.mark.parametrize(
    ("slots", "lanes", "shares"),
    [(64, 2, [32, 32]), (64, 3, [22, 21, 21]), (8, 1, [8]), (3, 8, [1, 1, 1]), (1, 2, [1])],
)
def test_lane_shares_add_up_to_the_run_s_slots_and_give_every_lane_one(slots, lanes, shares):
    assert lane_shares(slots, lanes) == shares
    assert sum(lane_shares(slots, lanes)) == slots


@pytest.mark.parametrize("budget", [LocalBudget(250), SharedBudget(LaneSignals.create(250).budget)])
def test_a_budget_is_taken_a_batch_at_a_time_and_unclaimed_leads_come_back(budget):
    assert budget.take(100) == 100
    assert budget.take(100) == 100
    budget.give_back(30)  # the claim found only 70 due
    assert budget.take(100) == 80
    assert budget.take(100) == 0


def test_lent_slots_go_to_the_lender_before_the_calls_waiting_for_them():
    async def scenario() -> list[str]:
        slots = LLMSlots(GenerationConfig(model="m", max_concurrency=4))
        order: list[str] = []
        release = threading.Event()  # the calls run on the LLM loop's thread

        async def call(name: str) -> None:
            async def answer() -> None:
                order.append(name)
                while not release.is_set():
                    await asyncio.sleep(0.001)

            await slots.call(answer)

        calls = [asyncio.create_task(call(f"call-{i}")) for i in range(10)]
        await asyncio.sleep(0.01)  # 4 calls hold the slots, 6 wait
        lender = asyncio.create_task(slots.lend(2, then=lambda: order.append("lent")))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*calls)
        lender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lender
        # The lent slots are back: 4 calls at once again.
        held = [asyncio.create_task(call(f"after-{i}")) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*held), 1)
        return order

    order = asyncio.run(scenario())
    first_four = {f"call-{i}" for i in range(4)}
    assert set(order[:4]) == first_four
    # When the first 4 finished, 2 of their slots went to the lender, before the 6 waiting calls
    # (a plain queue would have served it after all of them).
    assert order[4] == "lent"
    assert order[5:11] == [f"call-{i}" for i in range(4, 10)]


def test_while_slots_are_lent_only_the_rest_are_used():
    async def scenario() -> int:
        slots = LLMSlots(GenerationConfig(model="m", max_concurrency=4))
        lent = threading.Event()  # set on the LLM loop's thread
        lender = asyncio.create_task(slots.lend(3, then=lent.set))
        assert await asyncio.to_thread(lent.wait, 5)
        calls = CallsAtOnce()
        await asyncio.gather(*(slots.call(calls.answer) for _ in range(20)))
        lender.cancel()
        return calls.peak

    assert asyncio.run(scenario()) == 1


def busy_then_idle(seconds: float) -> None:
    """Hold the CPU for `seconds` (this process's CPU time, as a busy run would)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_other_lanes_start_only_once_this_process_is_busy(monkeypatch):
    monkeypatch.setattr(generation_lanes, "BUSY_WINDOW_SECONDS", 0.1)

    async def scenario(busy_seconds: float, wait: float) -> list[float]:
        started: list[float] = []

        async def start_when_busy() -> None:
            started.append(await generation_lanes.until_busy(0.8))

        watch = asyncio.create_task(start_when_busy())
        spinning = asyncio.create_task(asyncio.to_thread(busy_then_idle, busy_seconds))
        await asyncio.sleep(wait)
        watch.cancel()
        await spinning
        return started

    # Idle (an LLM with latency): never; a core kept busy (a fast LLM): after two windows.
    assert asyncio.run(scenario(0, 0.5)) == []
    busy = asyncio.run(scenario(0.6, 0.6))
    assert len(busy) == 1 and busy[0] >= 0.8


def test_a_share_of_zero_starts_the_other_lanes_at_once():
    started = [asyncio.run(generation_lanes.until_busy(0))]
    assert started == [0.0]
