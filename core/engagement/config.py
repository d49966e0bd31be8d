"""What an ingestion run is configured with, built once from the settings at the flow's start."""

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from core.engagement.inbound_sources import IMAPSource
from core.settings import Settings

# Webhook payloads ingested per transaction when the inbox is drained.
INBOX_BATCH = 200


class IMAPConfig(BaseModel):
    """The IMAP folder replies and bounces reach; unset (no host) unless IMAP_HOST is set."""

    model_config = ConfigDict(frozen=True)

    host: str | None = None
    port: int = 993
    username: str | None = None
    password: SecretStr | None = None
    folder: str = "INBOX"
    use_ssl: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> "IMAPConfig":
        """The IMAP_* settings."""
        return cls(
            host=settings.imap_host,
            port=settings.imap_port,
            username=settings.imap_username,
            password=settings.imap_password,
            folder=settings.imap_folder,
            use_ssl=settings.imap_ssl,
        )

    def reader(self, *, since: date | None) -> IMAPSource:
        """The folder's reader; ValueError when the host, login or password is missing."""
        if not self.host or not self.username or not self.password:
            raise ValueError("IMAP needs IMAP_HOST, IMAP_USERNAME and IMAP_PASSWORD")
        return IMAPSource(
            self.host,
            self.port,
            self.username,
            self.password.get_secret_value(),
            self.folder,
            use_ssl=self.use_ssl,
            since=since,
        )


class IngestionConfig(BaseModel):
    """How a run ingests: when soft bounces stop a lead, the IMAP folder, the inbox batch."""

    model_config = ConfigDict(frozen=True)

    soft_bounce_limit: int = Field(ge=1)
    imap: IMAPConfig = IMAPConfig()
    inbox_batch: int = Field(default=INBOX_BATCH, ge=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> "IngestionConfig":
        """ENGAGEMENT_SOFT_BOUNCE_LIMIT and the IMAP_* settings."""
        return cls(
            soft_bounce_limit=settings.engagement_soft_bounce_limit,
            imap=IMAPConfig.from_settings(settings),
        )
