"""A sliding-window request limit per key, in this process's memory.

`campaign-pipeline web` is one process, so its memory is the whole truth; several processes
behind a balancer would each allow the full rate.
"""

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class SlidingWindowLimit:
    """At most `per_minute` requests per key in any 60 seconds.

    Each key keeps the times of its requests within the window, so memory is bounded by the
    rate times the number of keys (here: one per API token). Call it from one event loop only.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("a rate limit needs at least one request a minute")
        self.per_minute = per_minute
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}

    def take(self, key: str) -> int | None:
        """Count one request for `key`; None if allowed, else whole seconds until one would be."""
        now = self._clock()
        recent = self._recent.setdefault(key, deque())
        while recent and recent[0] <= now - WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= self.per_minute:
            # A refused request is not counted: waiting the answer's time is always enough.
            return max(1, math.ceil(recent[0] + WINDOW_SECONDS - now))
        recent.append(now)
        return None
