"""IMAPSource against a real IMAP server on loopback: login, SINCE, chunks, TLS, never \\Seen."""

import imaplib
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.engagement.events import Malformed, NormalisedEvent
from core.engagement.inbound import classify_message
from core.engagement.inbound_sources import IMAPSource, InboundSourceError
from core.statuses import EngagementType
from tests.support.imap_server import LoopbackIMAP

INBOX = Path(__file__).resolve().parent.parent / "fixtures" / "mail" / "inbox"
USER, PASSWORD = "sam@seller.example", 's3cret pass"word'
# The fixtures in delivery order, one a day from 20 November (UTC), UIDs 1 to 9.
FIXTURES = sorted(
    (path for folder in ("cur", "new") for path in (INBOX / folder).iterdir()),
    key=lambda path: path.name,
)
FIRST_DAY = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)


def fill(server: LoopbackIMAP, folder: str = "INBOX") -> list[int]:
    return [
        server.add(folder, path.read_bytes(), FIRST_DAY + timedelta(days=index))
        for index, path in enumerate(FIXTURES)
    ]


@pytest.fixture
def imap() -> Iterator[LoopbackIMAP]:
    with LoopbackIMAP(auth=(USER, PASSWORD)) as server:
        fill(server)
        yield server


def source(server: LoopbackIMAP, **overrides: object) -> IMAPSource:
    settings: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "username": USER,
        "password": PASSWORD,
        "folder": "INBOX",
        "use_ssl": False,
        "timeout": 5,
    } | overrides
    return IMAPSource(**settings)  # type: ignore[arg-type]


def test_fetch_reads_every_message_classified_like_the_files(imap: LoopbackIMAP) -> None:
    results = list(source(imap).fetch())
    assert [key for key, _ in results] == [f"{imap.uidvalidity}:{uid}" for uid in range(1, 10)]
    for uid, ((_, result), path) in enumerate(zip(results, FIXTURES, strict=True), start=1):
        label = f"imap:{USER}@127.0.0.1/INBOX"
        assert result == classify_message(path.read_bytes(), source=label, line=uid)
    kinds = [r.type for _, r in results if isinstance(r, NormalisedEvent)]
    assert kinds.count(EngagementType.reply) == 3
    assert kinds.count(EngagementType.auto_reply) == 2
    assert kinds.count(EngagementType.bounce) == 3
    assert isinstance(results[-1][1], Malformed)  # the garbage file, UID 9


def test_fetch_since_asks_the_server_for_that_day_on(imap: LoopbackIMAP) -> None:
    keys = [key for key, _ in source(imap, since=date(2025, 11, 26)).fetch()]
    assert keys == [f"{imap.uidvalidity}:{uid}" for uid in (7, 8, 9)]
    assert any(command.endswith("UID SEARCH SINCE 26-Nov-2025") for command in imap.commands)


def test_since_counts_the_internal_dates_own_day(imap: LoopbackIMAP) -> None:
    # 23:30 on the 30th in New York is already 1 December in UTC; IMAP compares the 30th.
    late = datetime(2025, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    uid = imap.add("INBOX", FIXTURES[0].read_bytes(), late)
    assert [key for key, _ in source(imap, since=date(2025, 11, 30)).fetch()] == [
        f"{imap.uidvalidity}:{uid}"
    ]
    assert list(source(imap, since=date(2025, 12, 1)).fetch()) == []


def test_fetch_in_chunks(imap: LoopbackIMAP) -> None:
    results = list(source(imap, chunk_size=4).fetch())
    assert len(results) == 9
    fetches = [command.split(" ", 3)[3] for command in imap.commands if " UID FETCH " in command]
    assert fetches == [
        "1,2,3,4 (UID BODY.PEEK[])",
        "5,6,7,8 (UID BODY.PEEK[])",
        "9 (UID BODY.PEEK[])",
    ]


def test_messages_are_not_marked_seen(imap: LoopbackIMAP) -> None:
    list(source(imap).fetch())
    list(source(imap).fetch())
    assert all(imap.flags("INBOX", uid) == frozenset() for uid in range(1, 10))
    assert [command.split(" ", 2)[1] for command in imap.commands].count("EXAMINE") == 2
    # The control: a client that SELECTs and fetches BODY[] does mark the message read here.
    client = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    client.login(USER, PASSWORD)
    client.select("INBOX")
    client.uid("FETCH", "3", "(BODY[])")
    client.logout()
    assert imap.flags("INBOX", 3) == frozenset({"\\Seen"})


def test_a_refused_login_is_a_clear_error(imap: LoopbackIMAP) -> None:
    with pytest.raises(InboundSourceError) as caught:
        list(source(imap, password="wrong").fetch())
    text = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert text == (
        f"IMAP_USERNAME='{USER}' could not log in to IMAP_HOST=127.0.0.1: "
        "[AUTHENTICATIONFAILED] Invalid credentials; check IMAP_USERNAME and IMAP_PASSWORD"
    )
    assert "wrong" not in text
    assert imap.logins == 0


def test_a_missing_folder_is_a_clear_error(imap: LoopbackIMAP) -> None:
    with pytest.raises(
        InboundSourceError, match=r"^IMAP_FOLDER='Replies' cannot be opened on IMAP_HOST"
    ):
        list(source(imap, folder="Replies").fetch())


def test_folder_names_with_spaces_and_quotes(imap: LoopbackIMAP) -> None:
    uids = fill(imap, 'Sales "Replies" 2025')
    results = list(source(imap, folder='Sales "Replies" 2025').fetch())
    assert [key for key, _ in results] == [f"{imap.uidvalidity}:{uid}" for uid in uids]
    assert results[0][1] is not None and results[0][1].source.endswith('/Sales "Replies" 2025')


def test_an_empty_folder_yields_nothing(imap: LoopbackIMAP) -> None:
    imap.create("Empty")
    assert list(source(imap, folder="Empty").fetch()) == []
    assert list(source(imap, folder="INBOX", since=date(2030, 1, 1)).fetch()) == []


def test_nothing_listening_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = IMAPSource("127.0.0.1", port, USER, PASSWORD, "INBOX", use_ssl=False, timeout=5)
    with pytest.raises(InboundSourceError, match=rf"^IMAP_HOST=127.0.0.1:{port}: cannot connect: "):
        list(refused.fetch())


def test_non_ascii_folder_names_are_refused_up_front() -> None:
    with pytest.raises(InboundSourceError, match="IMAP_FOLDER='Entwürfe': only ASCII"):
        IMAPSource("127.0.0.1", 993, USER, PASSWORD, "Entwürfe")


@pytest.fixture(scope="module")
def imaps() -> Iterator[LoopbackIMAP]:
    with LoopbackIMAP(auth=(USER, PASSWORD), implicit_tls=True) as server:
        fill(server)
        yield server


def test_implicit_tls_with_the_servers_certificate(imaps: LoopbackIMAP) -> None:
    assert imaps.cert_path is not None
    context = ssl.create_default_context(cafile=str(imaps.cert_path))
    results = list(source(imaps, use_ssl=True, ssl_context=context).fetch())
    assert len(results) == 9
    assert all(imaps.flags("INBOX", uid) == frozenset() for uid in range(1, 10))


def test_tls_checks_the_certificate_by_default(imaps: LoopbackIMAP) -> None:
    # imaplib's own default context would accept this self-signed certificate.
    with pytest.raises(InboundSourceError, match=r"TLS failed: .*CERTIFICATE_VERIFY_FAILED"):
        list(source(imaps, use_ssl=True).fetch())


def test_tls_against_a_plain_server_is_a_clear_error(imap: LoopbackIMAP) -> None:
    with pytest.raises(InboundSourceError, match=r"TLS failed: .*check IMAP_SSL"):
        list(source(imap, use_ssl=True).fetch())


def test_the_loopback_server_answers_imaplib(imap: LoopbackIMAP) -> None:
    client = imaplib.IMAP4(imap.host, imap.port, timeout=5)
    assert "IMAP4REV1" in client.capabilities
    client.login(USER, PASSWORD)
    assert client.noop()[0] == "OK"
    assert client.select("INBOX", readonly=True) == ("OK", [b"9"])
    status, data = client.uid("FETCH", "2:3", "(FLAGS INTERNALDATE RFC822.SIZE)")
    assert status == "OK"
    dates = [imaplib.Internaldate2tuple(line) for line in data]
    assert [date[:3] for date in dates if date is not None] == [
        (2025, 11, 21),
        (2025, 11, 22),
    ]
    assert all(b"FLAGS ()" in line and b"RFC822.SIZE " in line for line in data)
    with pytest.raises(imaplib.IMAP4.error, match="unsupported command UID STORE"):
        client.uid("STORE", "1", "+FLAGS", "(\\Seen)")
    assert client.logout()[0] == "BYE"
