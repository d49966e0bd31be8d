"""Circuit breakers: the lines a sending mailbox's or a campaign's recent hard bounces and
complaints must not cross, before mail from it harms the sending domain.

The defaults follow the big mailbox providers: a hard-bounce rate of 3% is where a list is
plainly unverified, and Google and Yahoo treat 0.1% complaints as the warning line (0.3% as
enforcement). `sendingRules.protection` sets a campaign's lines, the MAILBOX_* settings every
mailbox's. Deciding whether figures cross them is `core.mailboxes.health.breaker_reason`.
"""

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class BreakerLines(BaseModel):
    """Where a breaker trips: rates are fractions (0.03 is 3%)."""

    # camelCase in JSON, like the rest of sendingRules; unknown keys are typos.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    max_hard_bounce_rate: float = Field(
        default=0.03, gt=0, le=1, description="Hard bounces per send that trip the breaker."
    )
    min_sends: int = Field(
        default=50, ge=1, description="Sends that must count before the bounce rate can trip it."
    )
    max_complaints: int = Field(
        default=3, ge=1, description="The fewest complaints that trip it, whatever the rate."
    )
    max_complaint_rate: float = Field(
        default=0.001, gt=0, le=1, description="Complaints per send that trip it (at the floor)."
    )
