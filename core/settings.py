"""Settings from the environment and an optional `.env`, read once at the edge and passed down."""

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQLALCHEMY_DRIVER = "postgresql+psycopg"


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

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(sqlalchemy_url(value.get_secret_value().strip()))


def get_settings() -> Settings:
    """Read settings now; callers at the edge pass the result down."""
    return Settings()
