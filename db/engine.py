"""Engine and session factories, the unit of work, and migrations: the only place that connects."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.embedded import ensure_embedded

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseNotReadyError(RuntimeError):
    """The database is reachable but not migrated to the revision this code needs."""


class DatabaseConfig(BaseModel):
    """Which database a run's tasks use: built once at the edge, passed to every task."""

    model_config = ConfigDict(frozen=True)

    # Secret: a URL may carry a password, and task inputs can reach logs and run states.
    url: SecretStr

    @classmethod
    def from_settings(cls, settings: Settings) -> "DatabaseConfig":
        """DATABASE_URL, or the embedded server started and migrated."""
        return cls(url=SecretStr(resolve_database_url(settings)))


def alembic_config(url: str) -> Config:
    """An Alembic config bound to url, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations up to revision."""
    command.upgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def resolve_database_url(settings: Settings, *, migrate: bool = True) -> str:
    """DATABASE_URL if set; otherwise the embedded server, started and (if asked) migrated."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    url = ensure_embedded(settings.embedded_pg_dir).url()
    if migrate:
        _migrate_once(url)
    return url


@cache
def _migrate_once(url: str) -> None:
    upgrade(url)


# A delivery lane holds one connection for its whole run and may take a second for a bounce or
# a refusal, and up to SMTP_MAX_CONNECTIONS (at most 64) lanes run at once. With a fixed overflow
# of 5, lanes past the tenth waited for a free connection, and one waiting past the pool's
# timeout failed. The pool keeps the lanes' connections for the next batch rather than closing
# them as overflow: a new connection is a new PostgreSQL backend, whose caches start cold and
# whose statements are planned again (it cost 15 lanes of 20 a new backend every batch, about
# 25 sends each). The pool only opens connections when asked for, so it keeps as many as the
# busiest moment used, for the life of the process (a flow run's, under a Prefect worker).
LANE_OVERFLOW = 2 * 64


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine with pre-ping, so a restarted PostgreSQL costs one failed checkout, not a run."""
    # hide_parameters: a failed statement's error (a run's state, its ERROR log) would otherwise
    # carry the rows it wrote, with addresses, subjects and bodies.
    return create_engine(
        url,
        pool_size=pool_size + LANE_OVERFLOW,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, since results outlive the transaction."""
    return sessionmaker(engine, expire_on_commit=False)


def check_revision(engine: Engine) -> None:
    """Refuse to work on a database at another revision, with the command that fixes it."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseNotReadyError(
            f"the database is at revision {current or 'none (empty)'}, this code needs {head}; "
            "run `campaign-pipeline db upgrade`"
        )


@cache
def _sessions_for_url(url: str) -> sessionmaker[Session]:
    engine = make_engine(url)
    check_revision(engine)
    return make_session_factory(engine)


def sessions_for(database: DatabaseConfig) -> sessionmaker[Session]:
    """This process's sessions on that database, its revision checked once.

    One engine (and pool) per URL for the life of the process: keyed by the URL it is given, so
    a caller that passes another database gets another pool, never a stale one.
    """
    return _sessions_for_url(database.url.get_secret_value())


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error. Queries never commit."""
    with factory() as session, session.begin():
        yield session
