"""The Sent-folder reader against a real IMAP server on loopback: special-use LIST, the usual
names, found and not found, read-only, and a mailbox that cannot be searched."""

from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from pydantic import SecretStr

from core.mailboxes.mailbox_file import ImapSpec
from core.mailboxes.sent_folder import SentFolderError, search_sent_folder
from tests.support.imap_server import LoopbackIMAP

USER, PASSWORD = "alex@seller.example", 'pa ss"word'
FILED = datetime(2026, 12, 4, 10, 0, 3, tzinfo=UTC)


def message(message_id: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = USER
    mail["To"] = "lead@buyer.example"
    mail["Subject"] = "Hello"
    mail["Message-ID"] = message_id
    mail.set_content("Hi")
    return mail.as_bytes()


def spec(server: LoopbackIMAP) -> ImapSpec:
    return ImapSpec.model_validate(
        {
            "host": server.host,
            "port": server.port,
            "ssl": False,
            "username": USER,
            "password": "env:ALEX_IMAP_PASSWORD",
        }
    )


def search(server: LoopbackIMAP, *ids: str, password: str = PASSWORD):
    return search_sent_folder(spec(server), SecretStr(password), list(ids), timeout=5)


@pytest.fixture
def imap() -> Iterator[LoopbackIMAP]:
    with LoopbackIMAP(auth=(USER, PASSWORD)) as server:
        yield server


def test_the_special_use_folder_is_searched_and_its_internaldate_kept(imap):
    imap.create("Sent", special_use=None)  # a decoy: the \Sent attribute wins over the name
    imap.create("Gesendete Objekte", special_use="\\Sent")
    imap.add("Gesendete Objekte", message("<s1@seller.example>"), FILED)
    imap.add("Sent", message("<s2@seller.example>"), FILED)
    answer = search(imap, "<s1@seller.example>", "<s2@seller.example>")
    assert answer.folder == "Gesendete Objekte"
    assert answer.found == {"<s1@seller.example>": FILED}
    assert any('HEADER Message-ID "<s1@seller.example>"' in c for c in imap.commands)
    assert any(c.split()[1] == "EXAMINE" for c in imap.commands)  # read-only
    assert imap.flags("Gesendete Objekte", 1) == frozenset()


@pytest.mark.parametrize("folder", ["[Gmail]/Sent Mail", "Sent Items", "Sent Messages", "Sent"])
def test_without_special_use_the_usual_names_are_found(imap, folder):
    imap.add(folder, message("<s1@seller.example>"), FILED)
    answer = search(imap, "<s1@seller.example>", "<missing@seller.example>")
    assert (answer.folder, answer.found) == (folder, {"<s1@seller.example>": FILED})


def test_a_message_id_is_matched_whole_not_as_a_prefix(imap):
    imap.add("Sent", message("<s10@seller.example>"), FILED)
    assert search(imap, "<s1@seller.example>").found == {}


def test_a_mailbox_without_a_sent_folder_is_an_error_not_an_empty_answer(imap):
    imap.create("Drafts")
    with pytest.raises(SentFolderError, match="LIST refused: no folder is marked"):
        search(imap, "<s1@seller.example>")


def test_a_refused_login_names_the_step_and_never_the_password(imap):
    with pytest.raises(SentFolderError, match="LOGIN refused") as raised:
        search(imap, "<s1@seller.example>", password="wrong-password-123")
    assert "wrong-password-123" not in str(raised.value)


def test_an_unreachable_server_is_an_error():
    with LoopbackIMAP() as server:
        closed = spec(server)
    with pytest.raises(SentFolderError, match="connect failed"):
        search_sent_folder(closed, SecretStr(PASSWORD), ["<s1@seller.example>"], timeout=2)
