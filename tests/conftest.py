"""Real PostgreSQL for every database test: DATABASE_URL when set, else the embedded server.

A template database is migrated once per session (per xdist worker); each test gets its own
database cloned from it with CREATE DATABASE ... TEMPLATE, so tests may commit, race and crash
without seeing each other.
"""

import itertools
import os
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.engine import make_engine, make_session_factory, resolve_database_url, upgrade
from tests.support.run_settings import RunSettings

_counter = itertools.count()


def worker_id() -> str:
    # The pid keeps two pytest sessions on one server (say, a developer's and CI's) apart.
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


@pytest.fixture(scope="session")
def server_url() -> str:
    """A SQLAlchemy URL of the server's maintenance database, where test databases are made."""
    settings = Settings()
    url = make_url(resolve_database_url(settings, migrate=False))
    return url.set(database="postgres").render_as_string(hide_password=False)


def _admin(server_url: str) -> psycopg.Connection:
    libpq = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(libpq, autocommit=True)


def url_for(server_url: str, database: str) -> str:
    """The server URL pointed at another database."""
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """(Re)create a database, optionally cloned from a template; returns its URL."""
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}" STRATEGY WAL_LOG' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    return url_for(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop a test database, closing whatever still holds it."""
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A database migrated to head once, cloned by every test."""
    name = f"cp_template_{worker_id()}"
    upgrade(create_database(server_url, name))
    yield name
    drop_database(server_url, name)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with no tables, for migration tests."""
    name = f"cp_empty_{worker_id()}_{next(_counter)}"
    yield create_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def database_url(server_url: str, template_database: str) -> Iterator[str]:
    """A fresh database at head, private to this test."""
    name = f"cp_test_{worker_id()}_{next(_counter)}"
    yield create_database(server_url, name, template=template_database)
    drop_database(server_url, name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on this test's database."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """The session factory the code under test uses."""
    return make_session_factory(engine)


# The Prefect test harness: started once per session, and only when a test runs flows.
@pytest.fixture(scope="session")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def worker_env(database_url, monkeypatch, prefect_harness, tmp_path):
    """The environment of flow runs in another process (a killed worker, a served deployment),
    whose edge is the environment: this test's database, no LLM key, results under tmp_path."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_RATE_LIMIT_NAME"):
        monkeypatch.delenv(name, raising=False)
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results")}):
        yield monkeypatch


@pytest.fixture
def run_settings(database_url, prefect_harness, tmp_path) -> Iterator[RunSettings]:
    """Settings handed to this test's in-process flow runs: its database, no LLM key, results
    under tmp_path. The environment is not read, so nothing set outside the test leaks in."""
    settings = Settings.model_validate(
        {"database_url": database_url, "embedded_pg_dir": tmp_path / "no-embedded-postgres"}
    )
    updates = {PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results")}
    with ExitStack() as stack, temporary_settings(updates=updates):
        yield RunSettings(settings, stack)
