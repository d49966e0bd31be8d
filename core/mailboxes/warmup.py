"""The warm-up cap: a young mailbox sends a few messages a day, then a few more each day."""

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

# Common practice for a new cold-email mailbox: 5 a day, 3 more each day, up to 40 a day.
DEFAULT_WARMUP_START = 5
DEFAULT_WARMUP_INCREMENT = 3
DEFAULT_DAILY_LIMIT = 40


class Warmup(BaseModel):
    """A mailbox's ramp: `start` sends on its first day, `increment` more on each later day."""

    model_config = ConfigDict(frozen=True)

    daily_limit: int = Field(default=DEFAULT_DAILY_LIMIT, ge=1)
    start: int = Field(default=DEFAULT_WARMUP_START, ge=1)
    increment: int = Field(default=DEFAULT_WARMUP_INCREMENT, ge=0)
    started_at: datetime

    def cap(self, now: datetime) -> int:
        """min(dailyLimit, start + increment x whole days since startedAt); day 0 before that."""
        days = max(0, (now - self.started_at) // timedelta(days=1))
        return min(self.daily_limit, self.start + self.increment * days)
