"""`campaign preview` and the web endpoint as real processes: the LLM is the fake OpenAI server
over HTTP, and both share the flows' result storage, so a draft is paid for once."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import factories
from tests.acceptance.test_web_command import free_port, wait_healthy
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import PERSONAL_LINE

ROOT = Path(__file__).resolve().parents[2]
CLI = shutil.which("campaign-pipeline") or str(Path(sys.executable).parent / "campaign-pipeline")
ADDRESS = "sarah.cli@buyer.example"
KEY = "sk-preview-cli-sentinel-0123456789"
TOKEN = "preview-cli-token-0123456789abcdef"


@pytest.fixture
def llm():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def env(database_url, llm, tmp_path) -> dict[str, str]:
    """A worker's environment: this test's database, the fake LLM, results under tmp_path."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": llm.base_url,
        "LLM_MAX_RETRIES": "0",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "UNSUBSCRIBE_SECRET": "an acceptance-test secret, long enough",
    }
    env.pop("PREFECT_API_URL", None)
    return env


@pytest.fixture
def seeded(sessions) -> tuple[str, str]:
    """(campaign id, lead id): a three-step campaign and one enrolled lead."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        campaign = factories.campaign(session, ws)
        lead = factories.lead(session, ws, email=ADDRESS)
        factories.enrolment(session, campaign, lead)
        return campaign.id, lead.id


@pytest.fixture
def campaign_id(seeded) -> str:
    return seeded[0]


def preview(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "campaign", "preview", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_prints_the_preview_and_a_second_one_comes_from_the_cache(
    env, llm, campaign_id, tmp_path
):
    # The address in another case is the same lead, as in the web app.
    args = ("--campaign", campaign_id, "--step", "1", "--lead", ADDRESS.upper())
    first = preview(env, *args)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert f"campaign {campaign_id}, step 1, lead {ADDRESS} (id " in out
    assert "rendered template\nsubject: Step 1 for Sarah\nHi Sarah, step 1 about Acme Corp." in out
    assert f"draft (gpt-4o-mini)\nsubject: Step 1 for Sarah\n{PERSONAL_LINE}\n" in out
    assert "quality gate: passed" in out
    assert "outcome: generated: a run would send the draft" in out
    assert "this preview: 1 LLM calls" in out and "(generated now)" in out
    assert llm.stats().requests == 1

    second = preview(env, *args)
    assert second.returncode == 0, second.stderr
    assert "this preview: 0 LLM calls, 0 prompt + 0 completion tokens, $0.000000" in second.stdout
    assert "(from the cache)" in second.stdout
    assert llm.stats().requests == 1
    assert KEY not in first.stdout + first.stderr + second.stdout + second.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--step", "1", "--lead", "nobody@buyer.example"), "no lead with address"),
        (("--step", "7", "--lead", ADDRESS), "has no step with stepOrder 7 (its steps: 1, 2, 3)"),
    ],
)
def test_bad_input_is_one_clear_line_and_no_llm_call(env, llm, campaign_id, args, message):
    result = preview(env, "--campaign", campaign_id, *args)
    assert result.returncode == 1
    assert message in result.stderr and "nothing was generated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert llm.stats().requests == 0


def test_the_web_endpoint_and_the_cli_share_one_cache(env, llm, seeded):
    campaign_id, lead_id = seeded
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [CLI, "web", "--port", str(port)],
        cwd=ROOT,
        env={**env, "PIPELINE_API_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(process, base_url)
        response = httpx.post(
            f"{base_url}/campaigns/{campaign_id}/steps/2/preview",
            json={"leadId": lead_id},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.json()["cacheHit"] is False and llm.stats().requests == 1
        refused = httpx.post(
            f"{base_url}/campaigns/{campaign_id}/steps/2/preview", json={}, timeout=60
        )
        assert refused.status_code == 401 and llm.stats().requests == 1
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    assert "/campaigns/{id}/steps/{stepOrder}/preview" in stdout
    assert "preview of campaign" in stdout + stderr
    for secret in (TOKEN, KEY, ADDRESS):
        assert secret not in stdout + stderr
    assert "Traceback" not in stdout + stderr

    # The CLI finds the draft the web process paid for.
    result = preview(env, "--campaign", campaign_id, "--step", "2", "--lead", ADDRESS)
    assert result.returncode == 0, result.stderr
    assert "(from the cache)" in result.stdout, result.stdout
    assert llm.stats().requests == 1
