"""`campaign-pipeline web` as a real process: it serves, unsubscribes, logs no token or address."""

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core.delivery.unsubscribe import sign_token
from db.base import utcnow
from db.models import CampaignLead, EmailSend
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
CLI = shutil.which("campaign-pipeline") or str(Path(sys.executable).parent / "campaign-pipeline")
SECRET = "an acceptance-test secret, long enough"
ADDRESS = "ann.web@example.com"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def start_web(database_url: str, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "UNSUBSCRIBE_SECRET": SECRET}
    return subprocess.Popen(
        [CLI, "web", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(process: subprocess.Popen[str], base_url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"web exited with {process.returncode}: {process.communicate()[1]}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail("web did not answer /healthz within 60 s")


@pytest.fixture
def send_id(sessions) -> str:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        campaign = factories.campaign(session, ws)
        lead = factories.lead(session, ws, email=ADDRESS)
        factories.enrolment(session, campaign, lead)
        send = factories.scheduled_send(
            session, campaign, lead, scheduled_for=utcnow() + timedelta(hours=1)
        )
        return send.id


def test_web_serves_healthz_and_one_click_without_logging_the_token(
    database_url, sessions, send_id
):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    token = sign_token(SECRET.encode(), send_id)
    process = start_web(database_url, port)
    try:
        health = wait_healthy(process, base_url)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        response = httpx.post(
            f"{base_url}/unsubscribe/{token}",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    with sessions() as session:
        assert session.scalars(select(CampaignLead.status)).one() == "unsubscribed"
        assert session.scalars(select(EmailSend.status)).one() == "cancelled"
    output = stdout + stderr
    assert f"serving http://127.0.0.1:{port}: /unsubscribe/" in stdout
    assert '"POST /unsubscribe/*** HTTP/1.1" 200' in output
    assert "unsubscribe via send" in output
    assert token not in output and ADDRESS not in output
    assert "Traceback" not in output


def test_a_port_in_use_is_one_clear_line(database_url):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = start_web(database_url, port)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "serving" not in stdout
    assert f"cannot listen on 127.0.0.1:{port}" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


def test_a_short_secret_is_refused_before_serving(database_url):
    env = {**os.environ, "DATABASE_URL": database_url, "UNSUBSCRIBE_SECRET": "short"}
    result = subprocess.run(
        [CLI, "web", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "UNSUBSCRIBE_SECRET must be at least 16 characters" in result.stderr
    assert "Traceback" not in result.stderr
