"""What an ingestion run is configured with, built once from the settings at the flow's start."""

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from core.engagement.inbound_sources import IMAPCheckpoint, IMAPSource, NewMail, SettingNames
from core.engagement.machine import MachineRules
from core.mailboxes.mailbox_file import ImapSpec
from core.replies.config import ReplyIntentConfig
from core.settings import Settings

# Webhook payloads ingested per transaction when the inbox is drained.
INBOX_BATCH = 200
# Events per task and transaction, unless a run of `ingest-engagement-events` says otherwise.
EVENT_CHUNK = 5000


class IMAPConfig(BaseModel):
    """The IMAP folder replies and bounces reach; unset (no host) unless IMAP_HOST is set."""

    model_config = ConfigDict(frozen=True)

    host: str | None = None
    port: int = 993
    username: str | None = None
    password: SecretStr | None = None
    folder: str = "INBOX"
    use_ssl: bool = True
    names: SettingNames = SettingNames.environment

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

    @classmethod
    def from_mailbox(cls, spec: ImapSpec, password: SecretStr) -> "IMAPConfig":
        """A sending mailbox's IMAP settings, with its password reference already resolved."""
        return cls(
            host=spec.host,
            port=spec.port,
            username=spec.username,
            password=password,
            folder=spec.folder,
            use_ssl=spec.ssl,
            names=SettingNames.mailbox_file,
        )

    def reader(self, *, since: date | None) -> IMAPSource:
        """The folder's reader; ValueError when the host, login or password is missing."""
        if not self.host or not self.username or not self.password:
            fields = ", ".join(self.names.of(field) for field in ("host", "username", "password"))
            raise ValueError(f"IMAP needs {fields}")
        return IMAPSource(
            self.host,
            self.port,
            self.username,
            self.password.get_secret_value(),
            self.folder,
            use_ssl=self.use_ssl,
            since=since,
            names=self.names,
        )


def read_new_mail(imap: IMAPConfig, checkpoint: IMAPCheckpoint | None) -> NewMail:
    """A folder's messages after `checkpoint`, and the checkpoint to keep once they are stored.

    An unchanged folder costs one EXAMINE; a changed UIDVALIDITY reads it from the start.
    Raises InboundSourceError with the server's answer.
    """
    return imap.reader(since=None).read_new(checkpoint)


class IngestionConfig(BaseModel):
    """How a run ingests: when soft bounces stop a lead, the IMAP folder, the inbox batch, how
    replies are classified and acted on, and when a click is taken for a machine's."""

    model_config = ConfigDict(frozen=True)

    soft_bounce_limit: int = Field(ge=1)
    imap: IMAPConfig = IMAPConfig()
    inbox_batch: int = Field(default=INBOX_BATCH, ge=1)
    intent: ReplyIntentConfig
    machine: MachineRules = MachineRules()

    @classmethod
    def from_settings(cls, settings: Settings) -> "IngestionConfig":
        """ENGAGEMENT_SOFT_BOUNCE_LIMIT, the IMAP_* settings, reply classification's and the
        MACHINE_CLICK_* ones."""
        return cls(
            soft_bounce_limit=settings.engagement_soft_bounce_limit,
            imap=IMAPConfig.from_settings(settings),
            intent=ReplyIntentConfig.from_settings(settings),
            machine=MachineRules.from_settings(settings),
        )
