"""The real `campaign-pipeline` console script, run in a subprocess against a test database."""

import os
import shutil
import subprocess
import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
CLI = shutil.which("campaign-pipeline") or str(Path(sys.executable).parent / "campaign-pipeline")

GOOD_CAMPAIGN = """
workspace: {id: w1, name: Acme}
id: camp-1
name: Q4 outreach
status: active
sendingRules: {timezone: America/New_York}
steps:
  - {stepOrder: 1, subjectTemplate: "Hi {{firstName|there}}", bodyTemplate: "Body 1"}
  - {stepOrder: 2, delayDays: 3, subjectTemplate: "Re: hi", bodyTemplate: "Body 2"}
"""


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        # The demo starts a temporary Prefect server and runs two flows: minutes on a busy box.
        [CLI, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _count(database_url: str, table: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()
    engine.dispose()
    return count


@pytest.fixture
def campaign_file(tmp_path):
    path = tmp_path / "campaign.yaml"
    path.write_text(GOOD_CAMPAIGN)
    return path


def test_campaign_create_then_enroll_with_bad_rows(database_url, campaign_file, tmp_path):
    created = run(database_url, "campaign", "create", "--file", str(campaign_file))
    assert created.returncode == 0, created.stderr
    assert "created campaign camp-1" in created.stdout
    assert _count(database_url, "SequenceStep") == 2

    leads = tmp_path / "leads.csv"
    leads.write_bytes(
        b"\xef\xbb\xbfemail,firstName\nann@x.io,Ann\nnope,Bob\nann@x.io,Ann2\nli@y.io,Li\n"
    )
    enrolled = run(database_url, "enroll", "--campaign", "camp-1", "--csv", str(leads))
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled 2, already enrolled 0, rejected 2" in enrolled.stdout
    assert "line 3: email: 'nope' is not a valid address" in enrolled.stderr
    assert "line 4: email: duplicate of line 2" in enrolled.stderr
    assert "Traceback" not in enrolled.stderr

    again = run(database_url, "enroll", "--campaign", "camp-1", "--csv", str(leads))
    assert again.returncode == 0
    assert "enrolled 0, already enrolled 2" in again.stdout
    assert _count(database_url, "CampaignLead") == 2


def test_enroll_exits_non_zero_only_when_nothing_could_be_enrolled(
    database_url, campaign_file, tmp_path
):
    run(database_url, "campaign", "create", "--file", str(campaign_file))
    all_bad = tmp_path / "bad.csv"
    all_bad.write_text("email\nnope\nalso-bad\n")
    result = run(database_url, "enroll", "--campaign", "camp-1", "--csv", str(all_bad))
    assert result.returncode == 1
    assert "enrolled 0, already enrolled 0, rejected 2" in result.stdout

    no_column = tmp_path / "nocol.csv"
    no_column.write_text("name\nAnn\n")
    result = run(database_url, "enroll", "--campaign", "camp-1", "--csv", str(no_column))
    assert result.returncode == 1
    assert "no email column" in result.stderr and "nothing was enrolled" in result.stderr

    result = run(database_url, "enroll", "--campaign", "nope", "--csv", str(all_bad))
    assert result.returncode == 1 and "no campaign with id 'nope'" in result.stderr


def test_a_bad_campaign_file_lists_every_error_and_writes_nothing(database_url, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD_CAMPAIGN.replace("America/New_York", "America/Nowhere")
        .replace("stepOrder: 2", "stepOrder: 3")
        .replace("status: active", "status: active\ncolour: blue")
    )
    result = run(database_url, "campaign", "create", "--file", str(bad))
    assert result.returncode == 1
    assert "3 problem(s)" in result.stderr
    for expected in ("sendingRules.timezone", "steps:", "colour:", "nothing was written"):
        assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert _count(database_url, "Campaign") == 0
    assert _count(database_url, "Workspace") == 0


def test_db_commands_report_where_and_revision(database_url):
    status = run(database_url, "db", "status")
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout and "(DATABASE_URL)" in status.stdout
    url = run(database_url, "db", "url")
    assert url.stdout.startswith("postgresql://")


def test_an_unmigrated_database_is_refused_with_the_fix(empty_database_url, campaign_file):
    result = run(empty_database_url, "campaign", "create", "--file", str(campaign_file))
    assert result.returncode == 1
    assert "run `campaign-pipeline db upgrade`" in result.stderr
    upgraded = run(empty_database_url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (
        run(empty_database_url, "campaign", "create", "--file", str(campaign_file)).returncode == 0
    )


def test_an_unreachable_database_is_one_clear_line():
    result = run("postgresql://nobody@127.0.0.1:1/none", "db", "status")
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_alembic_upgrade_head_from_the_repo_root(empty_database_url):
    alembic = str(Path(CLI).parent / "alembic")
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    result = subprocess.run(
        [alembic, "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Running upgrade add_ai_campaign_fields -> pipeline_safety" in result.stderr
    assert _count(empty_database_url, "CampaignLead") == 0


def test_demo_generates_and_delivers_the_first_step_to_the_outbox_once(
    database_url, tmp_path, monkeypatch
):
    for name in ("EMAIL_TRANSPORT", "SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTBOX_DIR", str(tmp_path / "outbox"))
    first = run(database_url, "demo")
    assert first.returncode == 0, first.stderr
    assert "campaign demo-campaign: created; enrolled 20, already enrolled 0" in first.stdout
    assert "claimed 20, generated 20, cache hits 0, fell back 0, held 0" in first.stdout
    assert "send-scheduled-emails: sent 20, retried 0, deferred 0, cancelled 0" in first.stdout
    assert f"outbox: 20 .eml files under {tmp_path / 'outbox'}" in first.stdout
    written = sorted((tmp_path / "outbox").glob("*/*.eml"))
    assert len(written) == 20
    message = BytesParser(policy=policy.default).parsebytes(written[0].read_bytes())
    assert message["From"] == "Alex from Pipeline <alex@pipeline.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    second = run(database_url, "demo")
    assert "already there; enrolled 0, already enrolled 20" in second.stdout
    assert "claimed 0, generated 0" in second.stdout
    assert "send-scheduled-emails: sent 0" in second.stdout
    assert len(list((tmp_path / "outbox").glob("*/*.eml"))) == 20
    assert _count(database_url, "EmailSend") == 20
    assert _count(database_url, "Lead") == 20
    assert _count(database_url, "SequenceStep") == 3
