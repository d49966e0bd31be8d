"""Reading one stored mailbox's mail (tasks.mailbox_replies._read): what an unusable row says."""

from core.mailboxes.secrets import masked
from db.queries.imap_checkpoints import MailboxInbox
from tasks.mailbox_replies import Unreadable, _read


def test_stored_settings_the_mailbox_file_would_refuse_are_reported_not_raised() -> None:
    inbox = MailboxInbox(
        id="m1",
        workspace_id="w",
        email="alex@acme.example",
        imap={"host": "imap.acme.example", "username": "alex", "password": "hunter2"},
        checkpoint=None,
    )
    answer = _read(inbox)
    assert isinstance(answer, Unreadable)
    assert answer.answer.startswith("stored IMAP settings not usable: password")
    assert "hunter2" not in answer.answer


def test_a_server_that_echoes_the_password_has_it_masked() -> None:
    assert masked("NO bad pass pw-123 for you", "pw-123") == "NO bad pass *** for you"
