"""How many LLM calls ran at once, counted by the calls themselves (on the LLM loop)."""

import asyncio


class CallsAtOnce:
    """`answer` stands in for a call's round trip; `peak` is the most that ran together."""

    def __init__(self, seconds: float = 0.005) -> None:
        self._seconds = seconds
        self._running = 0
        self.peak = 0

    async def answer(self) -> None:
        """One call: counted while it waits for its answer."""
        self._running += 1
        self.peak = max(self.peak, self._running)
        await asyncio.sleep(self._seconds)
        self._running -= 1
