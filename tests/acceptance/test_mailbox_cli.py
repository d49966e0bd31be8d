"""`mailbox add|list|pause|resume` and `campaign pause|resume`: the real CLI, a real database."""

import pytest
from sqlalchemy import create_engine, text

from tests.acceptance.test_cli import GOOD_CAMPAIGN, run
from tests.support.imap_server import LoopbackIMAP
from tests.support.smtp_server import LoopbackSMTP

MAILBOXES = """
workspaceId: w1
mailboxes:
  - email: alex@acme.example
    name: Alex Doe
    smtp:
      host: smtp.gmail.com
      port: 587
      security: starttls
      username: alex@acme.example
      password: "env:ALEX_SMTP_PASSWORD"
    imap:
      host: imap.gmail.com
      port: 993
      ssl: true
      username: alex@acme.example
      password: "env:ALEX_IMAP_PASSWORD"
      folder: INBOX
    dailyLimit: 40
    warmup: {start: 5, increment: 3}
  - email: sam@acme.example
    smtp: {host: smtp.office365.com, username: sam@acme.example, password: "prefect-secret:sam"}
"""

BAD_MAILBOXES = """
workspaceId: w1
mailboxes:
  - email: alex@acme.example
    smtp: {host: smtp.gmail.com, username: alex@acme.example, password: "hunter2-not-a-ref"}
  - email: sam@acme.example
    smtp: {host: smtp.gmail.com, port: 0, username: sam@acme.example, password: "env:SAM"}
    dailyLimit: 0
  - email: ALEX@acme.example
    smtp: {host: smtp.gmail.com, username: alex, password: "env:ALEX"}
"""


def _rows(database_url, query):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(text(query))]
    engine.dispose()
    return rows


@pytest.fixture
def workspace(database_url, tmp_path):
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(GOOD_CAMPAIGN)
    assert run(database_url, "campaign", "create", "--file", str(campaign)).returncode == 0
    return "w1"


def test_mailbox_add_list_pause_resume(database_url, workspace, tmp_path):
    file = tmp_path / "mailboxes.yaml"
    file.write_text(MAILBOXES)
    added = run(database_url, "mailbox", "add", "--file", str(file))
    assert added.returncode == 0, added.stderr
    assert "workspace w1: created 2, updated 0 mailbox(es)" in added.stdout
    again = run(database_url, "mailbox", "add", "--file", str(file))
    assert "created 0, updated 2" in again.stdout
    assert _rows(database_url, 'SELECT email, "smtpPasswordRef" FROM "Mailbox" ORDER BY email') == [
        ("alex@acme.example", "env:ALEX_SMTP_PASSWORD"),
        ("sam@acme.example", "prefect-secret:sam"),
    ]

    paused = run(database_url, "mailbox", "pause", "Alex@acme.example", "--why", "spam folder")
    assert paused.returncode == 0, paused.stderr
    assert "paused alex@acme.example (workspace w1): spam folder" in paused.stdout
    assert "its due sends wait (deferred, never failed) until `mailbox resume`" in paused.stderr
    listed = run(database_url, "mailbox", "list", "--workspace", "w1")
    assert listed.returncode == 0, listed.stderr
    alex, sam = listed.stdout.splitlines()
    assert alex.startswith("alex@acme.example (workspace w1): paused, cap today 5 of 40; last 7")
    assert "0 sent, hard bounces 0 (-), complaints 0 (-); paused since " in alex
    assert alex.endswith(": spam folder")
    assert sam.endswith("; no IMAP (replies to it are not read)")

    resumed = run(database_url, "mailbox", "resume", "alex@acme.example")
    assert "resumed alex@acme.example (workspace w1), was paused" in resumed.stdout
    assert "waiting sends go out when their deferral ends" in resumed.stderr
    assert "is already active" in run(database_url, "mailbox", "resume", "alex@acme.example").stdout
    assert _rows(database_url, 'SELECT status, "statusReason" FROM "Mailbox"') == [
        ("active", None),
        ("active", None),
    ]


def test_mailbox_add_lists_every_problem_and_writes_nothing(database_url, workspace, tmp_path):
    file = tmp_path / "mailboxes.yaml"
    file.write_text(BAD_MAILBOXES)
    refused = run(database_url, "mailbox", "add", "--file", str(file))
    assert refused.returncode == 1
    assert "4 problem(s)" in refused.stderr
    assert "mailboxes[0] (alex@acme.example): smtp.password: " in refused.stderr
    assert "env:NAME or prefect-secret:NAME" in refused.stderr
    assert "hunter2" not in refused.stderr + refused.stdout
    assert "mailboxes[1] (sam@acme.example): smtp.port: " in refused.stderr
    assert "mailboxes[1] (sam@acme.example): dailyLimit: " in refused.stderr
    assert "mailboxes[2] (ALEX@acme.example): email: repeats mailboxes[0]" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _rows(database_url, 'SELECT count(*) FROM "Mailbox"') == [(0,)]

    file.write_text(MAILBOXES.replace("workspaceId: w1", "workspaceId: nope"))
    unknown = run(database_url, "mailbox", "add", "--file", str(file))
    assert unknown.returncode == 1
    assert "no workspace 'nope'" in unknown.stderr and "nothing was written" in unknown.stderr


def test_mailbox_commands_name_what_they_cannot_find(database_url, workspace):
    missing = run(database_url, "mailbox", "pause", "who@acme.example", "--why", "x")
    assert missing.returncode == 1
    assert "no mailbox who@acme.example" in missing.stderr
    blank = run(database_url, "mailbox", "pause", "who@acme.example", "--why", " ")
    assert blank.returncode == 1 and "--why needs a reason" in blank.stderr
    assert (
        "no mailboxes in workspace w1"
        in run(database_url, "mailbox", "list", "--workspace", "w1").stdout
    )


def test_campaign_pause_and_resume(database_url, workspace):
    paused = run(database_url, "campaign", "pause", "camp-1", "--why", "list check")
    assert paused.returncode == 0, paused.stderr
    assert "paused campaign camp-1" in paused.stdout
    assert "already paused" in run(database_url, "campaign", "pause", "camp-1").stdout
    status = 'SELECT status, "statusReason", "statusChangedAt" IS NOT NULL FROM "Campaign"'
    assert _rows(database_url, status) == [("paused", "list check", True)]
    resumed = run(database_url, "campaign", "resume", "camp-1")
    assert "resumed campaign camp-1" in resumed.stdout
    assert _rows(database_url, status) == [("active", None, True)]
    missing = run(database_url, "campaign", "resume", "nope")
    assert missing.returncode == 1 and "no campaign with id 'nope'" in missing.stderr


def test_mailbox_check_says_ok_or_the_servers_answer(
    database_url, workspace, tmp_path, monkeypatch
):
    with (
        LoopbackSMTP(auth=("alex@acme.example", "alex-pw"), starttls=True) as smtp,
        LoopbackIMAP(auth=("alex@acme.example", "alex-imap-pw")) as imap,
    ):
        # The server's self-signed certificate, trusted the way an operator trusts a private CA.
        monkeypatch.setenv("SSL_CERT_FILE", str(smtp.cert_path))
        monkeypatch.setenv("ALEX_SMTP_PASSWORD", "alex-pw")
        monkeypatch.setenv("ALEX_IMAP_PASSWORD", "alex-imap-pw")
        monkeypatch.setenv("SAM_PW", "wrong-pw")
        file = tmp_path / "mailboxes.yaml"
        file.write_text(
            f"""
workspaceId: w1
mailboxes:
  - email: alex@acme.example
    smtp: {{host: 127.0.0.1, port: {smtp.port}, username: alex@acme.example,
            password: "env:ALEX_SMTP_PASSWORD"}}
    imap: {{host: 127.0.0.1, port: {imap.port}, ssl: false, username: alex@acme.example,
            password: "env:ALEX_IMAP_PASSWORD"}}
  - email: sam@acme.example
    smtp: {{host: 127.0.0.1, port: {smtp.port}, username: sam@acme.example,
            password: "env:SAM_PW"}}
"""
        )
        assert run(database_url, "mailbox", "add", "--file", str(file)).returncode == 0

        checked = run(database_url, "mailbox", "check")
        alex = run(database_url, "mailbox", "check", "alex@acme.example")
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "alex@acme.example (workspace w1, active):",
        f"  SMTP 127.0.0.1:{smtp.port} (starttls) as alex@acme.example: OK: EHLO, STARTTLS,"
        " AUTH, NOOP",
        f"  IMAP 127.0.0.1:{imap.port} (plain) as alex@acme.example: OK: LOGIN, SELECT INBOX"
        " (0 messages)",
        "sam@acme.example (workspace w1, active):",
        f"  SMTP 127.0.0.1:{smtp.port} (starttls) as sam@acme.example: FAILED: AUTH refused:"
        " 535 5.7.8 Authentication credentials invalid",
    ]
    assert "1 check(s) failed" in checked.stderr
    for secret in ("alex-pw", "alex-imap-pw", "wrong-pw"):
        assert secret not in checked.stdout + checked.stderr
    assert alex.returncode == 0, alex.stdout + alex.stderr
    assert "sam@" not in alex.stdout

    # A row the web app wrote with a password instead of a reference: refused, never printed.
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text("""UPDATE "Mailbox" SET "smtpPasswordRef" = 'hunter2' WHERE email LIKE 'sam@%'""")
        )
    engine.dispose()
    stored = run(database_url, "mailbox", "check", "sam@acme.example")
    assert stored.returncode == 1
    assert "SMTP (stored settings): FAILED: not usable: password: " in stored.stdout
    assert "hunter2" not in stored.stdout + stored.stderr
