"""A mailbox's recent health: hard-bounce and complaint rates over its recent handovers, and
whether they cross its circuit breaker's lines (a campaign's figures are judged the same way)."""

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.breakers import BreakerLines

# The window the circuit breakers look at; `mailbox list` shows the same figures.
HEALTH_WINDOW = timedelta(days=7)


class MailboxHealth(BaseModel):
    """Handovers, hard bounces and complaints of one mailbox (or campaign) over HEALTH_WINDOW."""

    model_config = ConfigDict(frozen=True)

    sends: int = Field(ge=0)
    hard_bounces: int = Field(ge=0)
    complaints: int = Field(ge=0)

    @property
    def hard_bounce_rate(self) -> float | None:
        """Hard bounces per handover; None before the first one."""
        return self.hard_bounces / self.sends if self.sends else None

    @property
    def complaint_rate(self) -> float | None:
        """Complaints per handover; None before the first one."""
        return self.complaints / self.sends if self.sends else None


def percent(rate: float | None) -> str:
    """`2.5%`, or `-` when there is nothing to divide by."""
    return "-" if rate is None else f"{rate:.1%}"


def breaker_reason(
    health: MailboxHealth, lines: BreakerLines, *, since: datetime | None = None
) -> str | None:
    """Why these figures cross the lines, stating them; None while they stay under.

    The bounce rate counts only from `lines.min_sends` sends on; complaints trip at
    `max(max_complaints, max_complaint_rate of the sends)`. `since` is when the counting began,
    when that is later than HEALTH_WINDOW ago (a resume starts a fresh window).
    """
    window = (
        f"in {HEALTH_WINDOW.days} days" if since is None else f"since {since:%Y-%m-%d %H:%M} UTC"
    )
    crossed = []
    bounces = health.hard_bounce_rate
    if (
        health.sends >= lines.min_sends
        and bounces is not None
        and bounces >= lines.max_hard_bounce_rate
    ):
        crossed.append(
            f"hard bounces {health.hard_bounces} of {health.sends} sends ({percent(bounces)})"
            f" {window} ≥ {_line(lines.max_hard_bounce_rate)}"
        )
    complaints = health.complaint_rate
    if health.complaints >= lines.max_complaints and (
        complaints is None or complaints >= lines.max_complaint_rate
    ):
        crossed.append(
            f"complaints {health.complaints} of {health.sends} sends ({percent(complaints)})"
            f" {window} ≥ max({lines.max_complaints}, {_line(lines.max_complaint_rate)})"
        )
    return "; ".join(crossed) or None


def _line(rate: float) -> str:
    """A line as the operator set it: 0.03 is `3%`, 0.0005 `0.05%` (never rounded away)."""
    return f"{rate * 100:g}%"
