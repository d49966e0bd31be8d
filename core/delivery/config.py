"""A delivery run's configuration, built once by the flow and passed to its tasks."""

from pydantic import BaseModel, ConfigDict, Field, SecretBytes

from core.breakers import BreakerLines
from core.delivery.transport import TransportConfig


class DeliveryConfig(BaseModel):
    """A run's delivery knobs, its transport and the key that signs unsubscribe links."""

    model_config = ConfigDict(frozen=True)

    public_base_url: str
    transport: TransportConfig
    # Secret: task inputs can reach logs and run states; the key lets anyone unsubscribe anyone.
    unsubscribe_secret: SecretBytes
    max_connections: int = 4
    max_attempts: int = 5
    handover_group: int = 1
    lease_seconds: int = 600
    # Where a sending mailbox's circuit breaker trips (a campaign's are in its sendingRules).
    breaker_lines: BreakerLines = Field(default_factory=BreakerLines)
