"""How a task does database work: one transaction on a worker thread, and one task preset.

Queries are blocking (SQLAlchemy + psycopg), so they run on a thread while the flow's event loop
keeps other batches moving. Sessions come from the `DatabaseConfig` the flow passed down.
"""

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import anyio
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from db.engine import DatabaseConfig, sessions_for

T = TypeVar("T")
P = ParamSpec("P")

# Claims and writes are fenced by their claim token and idempotent, so a retry after a lost
# connection repeats harmlessly. Their results are database state, never worth caching.
DATABASE_TASK_RETRIES = 2
DATABASE_TASK_RETRY_DELAYS: list[float] = [1, 5]


def database_task(
    name: str,
    *,
    retries: int = DATABASE_TASK_RETRIES,
    retry_delay_seconds: list[float] | None = None,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Task[P, Coroutine[Any, Any, T]]]:
    """The preset of a task that reads or writes the database: retried, never cached or kept."""
    delays = DATABASE_TASK_RETRY_DELAYS if retry_delay_seconds is None else retry_delay_seconds
    return task(
        name=name,
        retries=retries,
        retry_delay_seconds=delays,
        cache_policy=NO_CACHE,
        persist_result=False,
    )


def run_in_transaction(
    database: DatabaseConfig, work: Callable[[Session], T], *, rollback: bool = False
) -> T:
    """`work` in one transaction: committed on success (rolled back if asked), else rolled back."""
    # The transaction begins with work's first statement (autobegin), so work may still choose
    # its isolation first, as the report's read-only snapshot does.
    with sessions_for(database)() as session:
        try:
            outcome = work(session)
        except BaseException:
            session.rollback()
            raise
        if rollback:
            session.rollback()
        else:
            session.commit()
        return outcome


async def in_transaction(
    database: DatabaseConfig, work: Callable[[Session], T], *, rollback: bool = False
) -> T:
    """`run_in_transaction` on a worker thread; a dry run rolls back, so its counts are exact."""
    return await anyio.to_thread.run_sync(
        lambda: run_in_transaction(database, work, rollback=rollback)
    )
