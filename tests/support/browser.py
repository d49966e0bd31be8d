"""A headless Chromium for tests that open HTML: Debian's `/usr/bin/chromium`, driven by Playwright.

Playwright's own browser download is never used (nothing may download): the package drives the
system browser over its DevTools protocol. `.ci/run` installs Debian's chromium when it is
missing, so in CI (CI=true) a missing browser fails the test; on a developer's machine it is a
skip that says what to install.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Headless as root in a container, with nothing that phones home.
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> Path:
    """The browser's path; fails in CI and skips elsewhere when it is not installed."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does it in CI)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit; Playwright gives it a fresh temporary profile."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
