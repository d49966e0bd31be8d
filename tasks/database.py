"""The worker process's session factory, built once from settings at the edge."""

from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings
from db.engine import check_revision, make_engine, make_session_factory, resolve_database_url


@cache
def session_factory() -> sessionmaker[Session]:
    """Sessions for this process; the embedded server is started and migrated if in use."""
    engine = make_engine(resolve_database_url(get_settings()))
    check_revision(engine)
    return make_session_factory(engine)
