"""Bounded concurrency for a flow's own units of work (generation batches, ingestion chunks)."""

import asyncio
from collections.abc import Coroutine
from typing import Any


class InFlight:
    """Units of a run's work at once, at most `limit`; the first failure is raised.

    On the way out every one is awaited, or, after a failure, the rest are cancelled.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: set[asyncio.Task[None]] = set()

    async def add(self, work: Coroutine[Any, Any, None]) -> None:
        """Start one, first waiting for one to finish when `limit` are running."""
        self.running.add(asyncio.create_task(work))
        if len(self.running) >= self.limit:
            done, self.running = await asyncio.wait(
                self.running, return_when=asyncio.FIRST_COMPLETED
            )
            for finished in done:
                finished.result()

    async def __aenter__(self) -> "InFlight":
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                for finished in await asyncio.gather(*self.running, return_exceptions=True):
                    if isinstance(finished, BaseException):
                        raise finished
        finally:
            for pending in self.running:
                pending.cancel()
