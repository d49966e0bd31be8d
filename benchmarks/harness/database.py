"""Throwaway benchmark databases beside DATABASE_URL's (else the embedded server's), and the
capture of a statement the pipeline sends, to EXPLAIN it as sent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, event, make_url

# Every table a seed empties, children before parents.
TABLES = (
    '"EngagementEvent"',
    '"EmailSend"',
    '"GeneratedMessage"',
    '"CampaignLead"',
    '"SequenceStep"',
    '"Suppression"',
    '"Lead"',
    '"Mailbox"',
    '"Campaign"',
    '"Workspace"',
)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq/psycopg wants it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, name: str) -> str:
    """The same server, another database."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def server_url() -> str:
    """The maintenance database of DATABASE_URL's server, else of the embedded server."""
    from core.settings import Settings
    from db.engine import resolve_database_url

    url = resolve_database_url(Settings(), migrate=False)
    return with_database(url, "postgres")


def create_database(admin_url: str, name: str) -> str:
    """A new empty database (dropped first if a killed run left it); returns its URL."""
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop it, whoever is still connected."""
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def one_row(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a statement that always returns exactly one (an aggregate, SHOW, a function)."""
    row = cursor.fetchone()
    assert row is not None, "the statement returned no row"
    return row


def server_facts(url: str) -> tuple[str, int | None]:
    """(server version string, postmaster pid if the server runs on this machine)."""
    with psycopg.connect(libpq(url)) as conn:
        version = one_row(conn.execute("SHOW server_version"))[0]
        backend = one_row(conn.execute("SELECT pg_backend_pid()"))[0]
        try:
            stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
            postmaster: int | None = int(stat[1])
        except OSError:
            postmaster = None
    return version, postmaster


def capture_statements(engine: Engine, marker: str) -> list[tuple[str, Any]]:
    """Every (statement, parameters) the engine sends that contains `marker`, as it sends it
    (EXPLAINs excluded), so a plan is that of the SQL the pipeline runs."""
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        if marker in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    return captured


def explain_analyze(connection: Connection, statement: str, parameters: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a captured statement, as text; the caller rolls back."""
    rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
    return "\n".join(row[0] for row in rows)


def plan_ms(plan: str, what: str) -> float:
    """A plan's "Execution Time" or "Planning Time", in ms."""
    found = re.search(rf"{what}: ([\d.]+) ms", plan)
    assert found is not None, f"no {what} in the plan"
    return float(found.group(1))
