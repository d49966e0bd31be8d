"""The edge where a flow run reads its settings, once, before it builds its config objects.

A deployment's run reads the environment (and `.env`). A caller in the same process (a test, the
demo, a benchmark) may hand a run its `Settings` object instead, with `settings_for_runs`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from core.settings import Settings

_given: ContextVar[Settings | None] = ContextVar("campaign_pipeline_settings", default=None)


def run_settings() -> Settings:
    """The settings this flow run uses: the ones handed in, else the environment's."""
    given = _given.get()
    return given if given is not None else Settings()


@contextmanager
def settings_for_runs(settings: Settings) -> Iterator[Settings]:
    """Flow runs started inside this block use `settings` instead of reading the environment."""
    token = _given.set(settings)
    try:
        yield settings
    finally:
        _given.reset(token)
