"""The settings a test's in-process flow runs use, handed to them as an object."""

from contextlib import ExitStack
from typing import Any

from core.settings import Settings
from flows.settings import settings_for_runs


class RunSettings:
    """A test's `Settings` for the flow runs it starts; `update` changes them for later runs."""

    def __init__(self, settings: Settings, stack: ExitStack) -> None:
        self._stack = stack
        self.settings = stack.enter_context(settings_for_runs(settings))

    def update(self, **changes: Any) -> Settings:
        """New settings with these fields changed (validated like the environment's values)."""
        merged = self.settings.model_dump() | changes
        self.settings = self._stack.enter_context(
            settings_for_runs(Settings.model_validate(merged))
        )
        return self.settings
