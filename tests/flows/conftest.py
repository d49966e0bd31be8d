"""The Prefect test harness, started once per session and only for tests that run flows."""

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from tasks.database import session_factory


@pytest.fixture(scope="session")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def pipeline_env(database_url, monkeypatch, prefect_harness, tmp_path):
    """The flows' settings: this test's database, no LLM key, results under tmp_path."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_RATE_LIMIT_NAME"):
        monkeypatch.delenv(name, raising=False)
    session_factory.cache_clear()
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results")}):
        yield monkeypatch
    session_factory.cache_clear()
