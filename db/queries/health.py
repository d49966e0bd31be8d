"""The health check's query."""

from sqlalchemy import text
from sqlalchemy.orm import Session


def database_answers(session: Session) -> None:
    """A trivial round trip; raises SQLAlchemyError when the database does not answer."""
    session.execute(text("SELECT 1"))
