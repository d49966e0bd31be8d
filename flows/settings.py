"""The edge where a flow run reads its settings, once, before it builds its config objects.

A deployment's run reads the environment (and `.env`). A caller in the same process (a test, the
demo, a benchmark) may hand a run its `Settings` object instead, with `settings_for_runs`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prefect import get_run_logger

from core.generation.config import GenerationConfig
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


def warn_if_unpriced(config: GenerationConfig) -> None:
    """One WARNING in the run's log when its model has no price: its calls are then recorded
    with an unknown cost and the campaign report leaves them out of the spend."""
    if (warning := config.unpriced_warning()) is not None:
        get_run_logger().warning(warning)
