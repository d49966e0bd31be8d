"""A sending mailbox's IMAP settings as ingestion's reader config, and its lines in the report."""

import pytest
from pydantic import SecretStr

from core.engagement.config import IMAPConfig
from core.engagement.inbound_sources import InboundSourceError, SettingNames
from core.engagement.report import IngestReport, MailboxOutcome, MailboxRead
from core.mailboxes.mailbox_file import ImapSpec

SPEC = ImapSpec.model_validate(
    {
        "host": "imap.acme.example",
        "port": 1143,
        "ssl": False,
        "username": "alex@acme.example",
        "password": "env:ALEX_IMAP",
        "folder": "Replies",
    }
)


def test_setting_names_follow_the_environment_or_the_mailbox_file() -> None:
    assert SettingNames.environment.of("host") == "IMAP_HOST"
    assert SettingNames.mailbox_file.of("host") == "imap.host"


def test_a_mailbox_config_reads_its_own_folder_and_names_its_own_keys() -> None:
    config = IMAPConfig.from_mailbox(SPEC, SecretStr("pw"))
    reader = config.reader(since=None)
    assert (reader.host, reader.port, reader.folder, reader.use_ssl) == (
        "imap.acme.example",
        1143,
        "Replies",
        False,
    )
    assert reader.source == "imap:alex@acme.example@imap.acme.example/Replies"
    assert "pw" not in repr(config)
    with pytest.raises(InboundSourceError, match=r"^imap\.folder='Réponses': only ASCII"):
        config.model_copy(update={"folder": "Réponses"}).reader(since=None)
    with pytest.raises(ValueError, match=r"imap\.host, imap\.username, imap\.password"):
        config.model_copy(update={"password": None}).reader(since=None)


def test_the_summary_names_the_skipped_mailboxes() -> None:
    report = IngestReport()
    report.mailboxes += [
        MailboxRead(email="a@x.example", workspace="w", outcome=MailboxOutcome.unchanged),
        MailboxRead(
            email="b@x.example", workspace="w", outcome=MailboxOutcome.skipped, answer="refused"
        ),
    ]
    summary = report.summary_markdown(dry_run=False)
    assert "- sending mailboxes read: 1, skipped: 1 (b@x.example)" in summary
    assert "sending mailboxes" not in IngestReport().summary_markdown(dry_run=False)
