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

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(sqlalchemy_url(value.get_secret_value().strip()))


def get_settings() -> Settings:
    """Read settings now; callers at the edge pass the result down."""
    return Settings()
