"""A mailbox's recent health: hard-bounce and complaint rates over its recent handovers."""

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

# The window the circuit breakers look at; `mailbox list` shows the same figures.
HEALTH_WINDOW = timedelta(days=7)


class MailboxHealth(BaseModel):
    """Handovers, hard bounces and complaints of one mailbox over HEALTH_WINDOW."""

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
