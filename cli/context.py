"""What every command shares: the database it works on (DATABASE_URL or the embedded server),
its output streams, and errors as one line instead of a traceback."""

from dataclasses import dataclass
from pathlib import Path

import typer
import yaml
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings
from db.engine import (
    DatabaseNotReadyError,
    check_revision,
    make_engine,
    make_session_factory,
    resolve_database_url,
)


@dataclass(frozen=True)
class Database:
    """An open database and a sentence saying where it is."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    where: str


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Connect; the embedded server is started and migrated, an external one must be at head."""
    url = resolve_database_url(settings, migrate=migrate)
    engine = make_engine(url)
    if settings.database_url is None:
        where = (
            f"embedded PostgreSQL in {settings.embedded_pg_dir} "
            "(stop it with `campaign-pipeline db stop`)"
        )
    else:
        where = f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} (DATABASE_URL)"
        if migrate:
            check_revision(engine)
    return Database(url=url, engine=engine, sessions=make_session_factory(engine), where=where)


# Soft wrap: a reason must stay on one greppable line, whatever the terminal width.
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error (never a traceback) and return the exit to raise."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def connect(*, migrate: bool = True) -> Database:
    """Open the configured database, turning connection problems into one readable line."""
    try:
        return open_database(get_settings(), migrate=migrate)
    except OperationalError as exc:
        raise fail(f"cannot reach the database: {exc.orig}") from None
    except DatabaseNotReadyError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def load_yaml(file: Path) -> object:
    """A YAML (or JSON) file's document; a file that is not UTF-8 or not YAML ends the command."""
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise fail(
            f"{file}: line {line}: not UTF-8 ({exc.reason}); save the file as UTF-8"
            "\nnothing was written"
        ) from None
    except yaml.YAMLError as exc:
        raise fail(f"{file}: not valid YAML: {exc}") from None
