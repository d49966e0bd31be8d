"""The mailbox file: valid files parse; bad ones are refused with every problem listed."""

from datetime import date

import pytest

from core.mailboxes.mailbox_file import (
    MailboxFileError,
    PasswordRef,
    SecretScheme,
    parse_mailbox_file,
)
from core.settings import SMTPSecurity


def _mailbox(email="alex@acme.example", **overrides):
    entry = {
        "email": email,
        "name": "Alex Doe",
        "smtp": {
            "host": "smtp.gmail.com",
            "port": 587,
            "security": "starttls",
            "username": email,
            "password": "env:ALEX_SMTP_PASSWORD",
        },
        "imap": {
            "host": "imap.gmail.com",
            "port": 993,
            "ssl": True,
            "username": email,
            "password": "prefect-secret:alex-imap",
            "folder": "INBOX",
        },
        "dailyLimit": 40,
        "warmup": {"start": 5, "increment": 3},
    }
    entry.update(overrides)
    return entry


def _problems(document):
    with pytest.raises(MailboxFileError) as caught:
        parse_mailbox_file(document, source="mailboxes.yaml")
    return caught.value.problems


def test_the_issue_example_parses():
    parsed = parse_mailbox_file({"workspaceId": "ws_123", "mailboxes": [_mailbox()]})
    [mailbox] = parsed.mailboxes
    assert parsed.workspaceId == "ws_123"
    assert mailbox.smtp.security is SMTPSecurity.starttls
    assert mailbox.smtp.password == PasswordRef(scheme=SecretScheme.env, name="ALEX_SMTP_PASSWORD")
    assert mailbox.imap is not None
    assert str(mailbox.imap.password) == "prefect-secret:alex-imap"
    assert mailbox.warmup.startedAt is None


def test_defaults_follow_common_practice():
    entry = _mailbox()
    del entry["dailyLimit"], entry["warmup"], entry["imap"]
    del entry["smtp"]["port"], entry["smtp"]["security"]
    [mailbox] = parse_mailbox_file({"workspaceId": "w", "mailboxes": [entry]}).mailboxes
    assert (mailbox.dailyLimit, mailbox.warmup.start, mailbox.warmup.increment) == (40, 5, 3)
    assert (mailbox.smtp.port, mailbox.smtp.security) == (587, SMTPSecurity.starttls)
    assert mailbox.imap is None


def test_warmup_start_date_may_be_given():
    entry = _mailbox(warmup={"startedAt": "2026-11-02"})
    [mailbox] = parse_mailbox_file({"workspaceId": "w", "mailboxes": [entry]}).mailboxes
    assert mailbox.warmup.startedAt == date(2026, 11, 2)


@pytest.mark.parametrize(
    "password",
    ["hunter2", "vault:ALEX", "env:", "env:ALEX-PW", "prefect-secret:Alex_Imap", "ENV:ALEX", 1234],
)
def test_anything_but_a_reference_is_refused_without_repeating_it(password):
    entry = _mailbox()
    entry["smtp"]["password"] = password
    [problem] = _problems({"workspaceId": "w", "mailboxes": [entry]})
    assert problem.startswith("mailboxes[0] (alex@acme.example): smtp.password: ")
    assert "env:NAME or prefect-secret:NAME" in problem or "may only hold" in problem
    # What was written may be the password itself: the error never repeats it.
    assert password == "env:" or str(password) not in problem


def test_every_problem_is_listed_with_entry_and_field():
    second = _mailbox("sam@acme.example", dailyLimit=0)
    second["smtp"]["port"] = 70000
    third = _mailbox("not-an-address")
    del third["smtp"]["host"]
    problems = _problems({"workspaceId": " ", "mailboxes": [_mailbox(), second, third]})
    assert len(problems) == 5, problems
    assert problems[0].startswith("workspaceId: ")
    assert any(p.startswith("mailboxes[1] (sam@acme.example): smtp.port: ") for p in problems)
    assert any(p.startswith("mailboxes[1] (sam@acme.example): dailyLimit: ") for p in problems)
    assert any(p.startswith("mailboxes[2] (not-an-address): email: ") for p in problems)
    assert "mailboxes[2] (not-an-address): smtp.host: Field required" in problems


def test_repeated_emails_are_refused_in_any_case_alongside_other_problems():
    bad = _mailbox("other@acme.example", dailyLimit=-1)
    repeat = _mailbox("ALEX@acme.example")
    problems = _problems({"workspaceId": "w", "mailboxes": [_mailbox(), bad, repeat]})
    assert problems[-1] == (
        "mailboxes[2] (ALEX@acme.example): email: repeats mailboxes[0]; each mailbox appears once"
    )
    assert len(problems) == 2


def test_unknown_keys_and_missing_mailboxes_are_refused():
    assert _problems({"workspaceId": "w", "mailboxes": [_mailbox(smtpHost="x")]}) == [
        "mailboxes[0] (alex@acme.example): smtpHost: Extra inputs are not permitted"
    ]
    assert _problems({"workspaceId": "w", "mailboxes": []})[0].startswith("mailboxes: ")
    assert _problems(["not", "a", "mapping"])[0].startswith("(root): ")
