"""Settings from the environment and an optional `.env`, read once at the edge and passed down."""

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.breakers import BreakerLines

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQLALCHEMY_DRIVER = "postgresql+psycopg"
_LINES = BreakerLines()  # the documented defaults


def sqlalchemy_url(url: str) -> str:
    """Turn any PostgreSQL URL (web app, Supabase) into the SQLAlchemy + psycopg form."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like postgresql://user:password@host:5432/dbname")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return f"{SQLALCHEMY_DRIVER}://{rest}"
    raise ValueError(
        f"DATABASE_URL has scheme {scheme!r}; use postgresql:// or postgresql+psycopg://"
    )


class TransportKind(StrEnum):
    smtp = "smtp"
    outbox = "outbox"  # one .eml file per send, for the demo and for inspection
    console = "console"


class SMTPSecurity(StrEnum):
    none = "none"
    starttls = "starttls"
    ssl = "ssl"  # implicit TLS, usually port 465


class Settings(BaseSettings):
    """Every knob, named as its environment variable (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in EMBEDDED_PG_DIR is used.",
    )
    embedded_pg_dir: Path = Field(
        default=PROJECT_ROOT / ".data" / "postgres",
        description="Data directory of the embedded PostgreSQL (used only without DATABASE_URL).",
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Unset: the offline template generator is used."
    )
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint; unset means api.openai.com."
    )
    openai_model: str = Field(default="gpt-4o-mini", description="Chat model for personalisation.")
    llm_max_concurrency: int = Field(default=64, ge=1, description="LLM calls in flight per run.")
    generation_processes: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Processes a process-campaign-sends run generates in when more than one "
        "batch is due (the run's LLM_MAX_CONCURRENCY is shared between them); 1 keeps it in one.",
    )
    generation_processes_when_busy: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="The share of a core a process-campaign-sends run's own process must use "
        "(two seconds in a row) before it starts its other GENERATION_PROCESSES; 0 starts them "
        "as soon as many leads are due.",
    )
    llm_timeout_seconds: float = Field(default=30.0, gt=0, description="Per LLM request.")
    llm_max_retries: int = Field(
        default=4, ge=0, description="Retries of a 429/5xx/timeout, with backoff and jitter."
    )
    llm_rate_limit_name: str | None = Field(
        default=None,
        description="A Prefect global concurrency limit used as the LLM requests-per-minute"
        " limit (slot decay = RPM/60); unset: no limit beyond concurrency.",
    )
    claim_lease_seconds: int = Field(
        default=600, ge=1, description="How long a claim holds a lead before others may take it."
    )
    max_generation_attempts: int = Field(
        default=8, ge=1, description="Holds in a row before a lead is marked failed."
    )
    openai_service_tier: Literal["auto", "default", "flex", "priority"] | None = Field(
        default=None,
        description="service_tier of the synchronous calls; `flex` is half price and slower"
        " (and may answer 429 when capacity is short). Unset: the project's default tier.",
    )
    openai_prices: dict[str, dict[str, float]] | None = Field(
        default=None,
        description='JSON, model -> {"input", "cached_input", "output"} USD per 1M tokens at'
        " the standard tier: overrides or adds to core.generation.pricing.DEFAULT_PRICES.",
    )
    pregenerate_min_lead_hours: float = Field(
        default=36, ge=25, description="Write a step ahead only when it is due at least this late."
    )
    pregenerate_max_days: float = Field(
        default=7, gt=0, description="Write a step ahead only when it is due at most this soon."
    )

    email_transport: TransportKind | None = Field(
        default=None, description="Unset: smtp when SMTP_HOST is set, else the file outbox."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for delivery.")
    smtp_port: int | None = Field(
        default=None, ge=1, le=65535, description="Unset: 465 for ssl, 587 for starttls, else 25."
    )
    smtp_username: str | None = Field(default=None, description="AUTH login, when required.")
    smtp_password: SecretStr | None = Field(default=None, description="AUTH password.")
    smtp_security: SMTPSecurity = Field(
        default=SMTPSecurity.starttls, description="none, starttls or ssl (implicit TLS)."
    )
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, description="Per SMTP command.")
    smtp_max_connections: int = Field(
        default=4, ge=1, le=64, description="Sending mailboxes delivered in parallel per run."
    )
    delivery_handover_group: int = Field(
        default=1,
        ge=1,
        le=500,
        description=(
            "Sends of one connection handed over per commit. A crash leaves up to this many"
            " of a connection's sends `unknown`; more is faster, for relays that need it."
        ),
    )
    reconcile_grace_seconds: int = Field(
        default=900,
        ge=0,
        description=(
            "How long after its handover an `unknown` send missing from its mailbox's Sent"
            " folder stays `unknown` before it is scheduled again."
        ),
    )
    max_delivery_attempts: int = Field(
        default=5, ge=1, description="Tries of a send refused with a 4xx before it is failed."
    )
    outbox_dir: Path = Field(
        default=PROJECT_ROOT / ".data" / "outbox", description="Where the outbox writes .eml files."
    )
    unsubscribe_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key of unsubscribe tokens. Unset: a random key kept in .data/.",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Where `campaign-pipeline web` is reachable; unsubscribe links point here.",
    )
    mailbox_max_hard_bounce_rate: float = Field(
        default=_LINES.max_hard_bounce_rate,
        gt=0,
        le=1,
        description="A mailbox's hard bounces per send (0.03 is 3%) that pause it, once"
        " MAILBOX_BREAKER_MIN_SENDS count.",
    )
    mailbox_breaker_min_sends: int = Field(
        default=_LINES.min_sends,
        ge=1,
        description="A mailbox's sends that must count before its bounce rate can pause it.",
    )
    mailbox_max_complaints: int = Field(
        default=_LINES.max_complaints,
        ge=1,
        description="The fewest complaints that pause a mailbox, whatever the rate.",
    )
    mailbox_max_complaint_rate: float = Field(
        default=_LINES.max_complaint_rate,
        gt=0,
        le=1,
        description="A mailbox's complaints per send (0.001 is 0.1%) that pause it.",
    )
    engagement_soft_bounce_limit: int = Field(
        default=3, ge=1, description="Soft bounces of one enrolment before it becomes bounced."
    )
    machine_click_window_seconds: float = Field(
        default=10,
        ge=0,
        description="A click this soon after its email was sent is a machine's (a link scanner);"
        " 0 turns the rule off.",
    )
    machine_click_burst_seconds: float = Field(
        default=1,
        ge=0,
        description="Two different links of one email clicked this close together are a"
        " machine's; 0 turns the rule off.",
    )
    reply_intent_min_confidence: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="A reply classified with less confidence stops its lead as `replied`,"
        " whatever its intent.",
    )
    reply_default_pause_days: int = Field(
        default=7,
        ge=1,
        le=365,
        description="How long an out-of-office or not-now reply without a return date pauses"
        " the lead's follow-up.",
    )
    imap_host: str | None = Field(
        default=None, description="The IMAP inbox replies and bounces reach. Unset: no IMAP source."
    )
    imap_port: int = Field(default=993, ge=1, le=65535, description="IMAP port.")
    imap_username: str | None = Field(default=None, description="IMAP login.")
    imap_password: SecretStr | None = Field(default=None, description="IMAP password.")
    imap_folder: str = Field(default="INBOX", description="The folder replies and bounces reach.")
    imap_ssl: bool = Field(default=True, description="IMAP over TLS (port 993).")
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="SendGrid's Signed Event Webhook verification key (base64 DER, ECDSA"
        " P-256). Unset: /webhooks/sendgrid answers 404.",
    )
    mailgun_webhook_signing_key: SecretStr | None = Field(
        default=None,
        description="Mailgun's HTTP webhook signing key. Unset: /webhooks/mailgun answers 404.",
    )
    postmark_webhook_username: str | None = Field(
        default=None,
        description="HTTP Basic user in Postmark's webhook URL; set it with"
        " POSTMARK_WEBHOOK_PASSWORD, or neither (then /webhooks/postmark answers 404).",
    )
    postmark_webhook_password: SecretStr | None = Field(
        default=None, description="HTTP Basic password in Postmark's webhook URL."
    )
    pipeline_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of POST /campaigns/{id}/steps/{stepOrder}/preview, at least"
        " 16 characters. Unset: the endpoint answers 404.",
    )
    preview_rate_per_minute: int = Field(
        default=20, ge=1, description="Previews one token may ask for in any 60 seconds."
    )

    @property
    def transport(self) -> TransportKind:
        """The transport in use: the configured one, else SMTP when a host is set."""
        if self.email_transport is not None:
            return self.email_transport
        return TransportKind.smtp if self.smtp_host else TransportKind.outbox

    @property
    def mailbox_breaker_lines(self) -> BreakerLines:
        """Where every sending mailbox's circuit breaker trips."""
        return BreakerLines(
            max_hard_bounce_rate=self.mailbox_max_hard_bounce_rate,
            min_sends=self.mailbox_breaker_min_sends,
            max_complaints=self.mailbox_max_complaints,
            max_complaint_rate=self.mailbox_max_complaint_rate,
        )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(sqlalchemy_url(value.get_secret_value().strip()))


def get_settings() -> Settings:
    """Read settings now; callers at the edge pass the result down."""
    return Settings()
