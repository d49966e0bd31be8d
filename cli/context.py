"""The database a command works on: DATABASE_URL, or the embedded server, described for humans."""

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.engine import check_revision, make_engine, make_session_factory, resolve_database_url


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
