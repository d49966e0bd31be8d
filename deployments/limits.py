"""The global concurrency limits the flows use, created or updated idempotently.

Today that is one: the LLM requests-per-minute limit `tasks/generation.py` takes a token from
before every real LLM call, named by `LLM_RATE_LIMIT_NAME`. It is a Prefect global concurrency
limit with slot decay, so it holds across every worker and flow run: `limit` is the burst, and
`slot_decay_per_second` (requests per minute / 60) the sustained rate. The flows call it with
`strict=False`, so a missing limit means no limit at all, which is why `prefect setup` makes
sure it exists.

Prefect is imported where it is used, so the CLI can read the defaults without paying for it.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from core.settings import Settings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

# OpenAI's lowest paid tier for the small models; a burst of a tenth of a minute.
DEFAULT_LLM_REQUESTS_PER_MINUTE = 500

Action = Literal["created", "updated", "unchanged", "skipped", "noted"]


@dataclass(frozen=True)
class SetupResult:
    """What setup did to one Prefect object, in words for the operator."""

    subject: str
    action: Action
    detail: str = ""

    def line(self) -> str:
        """One line for the console."""
        if self.action == "noted":
            return f"{self.subject}: {self.detail}"
        return f"{self.subject}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class RateLimit:
    """A requests-per-minute limit as a global concurrency limit with slot decay."""

    name: str
    per_minute: float
    burst: int

    @property
    def slot_decay_per_second(self) -> float:
        """Slots freed per second: the sustained rate."""
        return round(self.per_minute / 60, 4)

    def describe(self) -> str:
        """The limit in an operator's words."""
        return f"{round(self.per_minute, 1):g} requests/min, burst {self.burst}"


def default_rate_limit(name: str, per_minute: int | None, burst: int | None) -> RateLimit:
    """A new limit: the figures given, else 500 requests/min with a tenth of that as burst."""
    rate = per_minute or DEFAULT_LLM_REQUESTS_PER_MINUTE
    return RateLimit(name, rate, burst or max(1, round(rate / 10)))


async def ensure_rate_limit(
    client: "PrefectClient", name: str, *, per_minute: int | None, burst: int | None
) -> SetupResult:
    """Create the limit if missing. An existing one changes only in the figures given (the
    rest stays as tuned in the UI or CLI), and is made active when any is given."""
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    subject = f"rate limit {name!r}"
    try:
        current = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        wanted = default_rate_limit(name, per_minute, burst)
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=name,
                limit=wanted.burst,
                slot_decay_per_second=wanted.slot_decay_per_second,
                active=True,
            )
        )
        return SetupResult(subject, "created", wanted.describe())
    now = RateLimit(name, current.slot_decay_per_second * 60, current.limit)
    if per_minute is None and burst is None:
        inactive = "" if current.active else "; INACTIVE, so the LLM calls are not limited"
        return SetupResult(subject, "unchanged", now.describe() + inactive)
    wanted = RateLimit(name, per_minute or now.per_minute, burst or now.burst)
    if (
        current.active
        and current.limit == wanted.burst
        and abs(current.slot_decay_per_second - wanted.slot_decay_per_second) < 1e-3
    ):
        return SetupResult(subject, "unchanged", now.describe())
    await client.update_global_concurrency_limit(
        name,
        GlobalConcurrencyLimitUpdate(
            limit=wanted.burst, slot_decay_per_second=wanted.slot_decay_per_second, active=True
        ),
    )
    return SetupResult(subject, "updated", f"{now.describe()} -> {wanted.describe()}")


async def ensure_limits(
    client: "PrefectClient",
    settings: Settings,
    *,
    llm_per_minute: int | None = None,
    llm_burst: int | None = None,
) -> list[SetupResult]:
    """Every limit the flows use, present and (when figures are given) as asked."""
    if not settings.llm_rate_limit_name:
        return [
            SetupResult(
                "LLM rate limit",
                "skipped",
                "LLM_RATE_LIMIT_NAME is unset: only LLM_MAX_CONCURRENCY limits the LLM calls",
            )
        ]
    return [
        await ensure_rate_limit(
            client, settings.llm_rate_limit_name, per_minute=llm_per_minute, burst=llm_burst
        )
    ]
