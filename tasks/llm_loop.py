"""The process's LLM loop: an event loop on a thread of its own that makes every LLM call.

A run's own event loop also prepares leads, gates answers, writes them to the result store and
runs Prefect's task engine. On that loop an answer that arrives while other work runs waits for
it, and its slot with it. On a loop that does nothing else, an answer is read and its slot
handed to the next call at once; the run's loop takes the answer when it is free. The GIL is
still shared, but a thread waiting for it gets it within the switch interval, not after
a whole wave of answers has been gated and written; the loop lowers that interval to 1 ms for
the process, since the calls' thread wakes for every answer and waits for the GIL each time.
"""

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How long the flow's thread may hold the GIL while the calls' thread waits for it.
SWITCH_INTERVAL_SECONDS = 0.001


class _LLMLoop:
    """One loop per process, started on first use (and again in a forked child, which has the
    parent's loop object but not its thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # 5 ms by default: at 300 ms and 64 slots, 1 ms made runs 1-2 % faster.
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="llm-calls", daemon=True)
                thread.start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop


_llm_loop = _LLMLoop()


async def on_llm_loop(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `call()` on the LLM loop and wait here for its result or its exception.

    The coroutine runs in a copy of the caller's context (Prefect's run context included), and
    cancelling the caller cancels it.
    """
    loop = _llm_loop.running()
    if asyncio.get_running_loop() is loop:
        return await call()
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))
