"""The LLM loop: calls run on a thread of their own, in the caller's context, and a cancelled
caller cancels its call there."""

import asyncio
import contextvars
import threading

import pytest

from core.generation.config import GenerationConfig
from tasks.generation import LLMSlots
from tasks.llm_loop import on_llm_loop
from tests.support.calls_at_once import CallsAtOnce

RUN = contextvars.ContextVar("RUN", default="none")


def test_a_call_runs_on_the_llm_thread_in_the_caller_s_context():
    async def call() -> tuple[str, str]:
        return threading.current_thread().name, RUN.get()

    async def scenario() -> tuple[str, str]:
        RUN.set("run-1")
        return await on_llm_loop(call)

    assert asyncio.run(scenario()) == ("llm-calls", "run-1")


def test_a_call_s_error_reaches_the_caller_as_itself():
    async def call() -> None:
        raise LookupError("lead L1: no such step")

    with pytest.raises(LookupError, match="lead L1"):
        asyncio.run(on_llm_loop(call))


def test_cancelling_the_caller_cancels_the_call_and_gives_its_slot_back():
    started, cancelled = threading.Event(), threading.Event()

    async def call() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> None:
        slots = LLMSlots(GenerationConfig(model="m", max_concurrency=1))
        caller = asyncio.create_task(slots.call(call))
        await asyncio.to_thread(started.wait, 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.to_thread(cancelled.wait, 5)

        async def answer() -> str:
            return "the slot was free again"

        # The run's only slot: a call that never gave it back would wait here forever.
        assert await asyncio.wait_for(slots.call(answer), 5) == "the slot was free again"

    asyncio.run(scenario())
    assert cancelled.is_set()


def test_each_run_s_event_loop_has_its_own_slots_on_the_shared_llm_loop():
    async def peak_of(concurrency: int) -> int:
        slots = LLMSlots(GenerationConfig(model="m", max_concurrency=concurrency))
        calls = CallsAtOnce(seconds=0.01)
        await asyncio.gather(*(slots.call(calls.answer) for _ in range(12)))
        return calls.peak

    assert asyncio.run(peak_of(2)) == 2
    assert asyncio.run(peak_of(5)) == 5
