"""`read_new_mail` over two mailboxes on loopback IMAP servers: one EXAMINE when nothing is new,
each new message read once, a changed UIDVALIDITY read from the start, an unreachable server
named by the mailbox file's keys."""

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.engagement.config import IMAPConfig, read_new_mail
from core.engagement.events import NormalisedEvent
from core.engagement.inbound_sources import IMAPCheckpoint, InboundSourceError
from core.mailboxes.mailbox_file import ImapSpec
from tests.support.imap_server import LoopbackIMAP

INBOX = Path(__file__).resolve().parent.parent / "fixtures" / "mail" / "inbox"
REPLY = (INBOX / "new" / "1764151201.M1P4242.reply-in-reply-to").read_bytes()
AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LOGINS = {"alex": ("alex@acme.example", "alex-pw"), "blair": ("blair@acme.example", "blair-pw")}


@pytest.fixture
def servers() -> Iterator[dict[str, LoopbackIMAP]]:
    with (
        LoopbackIMAP(auth=LOGINS["alex"], uidvalidity=100) as alex,
        LoopbackIMAP(auth=LOGINS["blair"], uidvalidity=200) as blair,
    ):
        for index in range(3):
            alex.add("INBOX", REPLY, AT + timedelta(minutes=index))
        blair.add("INBOX", REPLY, AT)
        yield {"alex": alex, "blair": blair}


def config(server: LoopbackIMAP, who: str, **overrides: object) -> IMAPConfig:
    username, password = LOGINS[who]
    spec = ImapSpec.model_validate(
        {
            "host": server.host,
            "port": server.port,
            "ssl": False,
            "username": username,
            "password": f"env:{who.upper()}_IMAP",
        }
        | overrides
    )
    return IMAPConfig.from_mailbox(spec, SecretStr(password))


def asked(server: LoopbackIMAP) -> list[str]:
    """The commands after the greeting, without tags."""
    return [command.split(" ", 1)[1] for command in server.commands]


def test_a_second_read_of_two_unchanged_mailboxes_asks_nothing_but_examine(servers) -> None:
    first = {who: read_new_mail(config(s, who), None) for who, s in servers.items()}
    assert [len(first[who].results) for who in ("alex", "blair")] == [3, 1]
    assert first["alex"].checkpoint == IMAPCheckpoint(100, 3)
    assert first["blair"].checkpoint == IMAPCheckpoint(200, 1)
    assert all(isinstance(r, NormalisedEvent) for m in first.values() for r in m.results)
    for server in servers.values():
        server.commands.clear()
    again = {
        who: read_new_mail(config(s, who), first[who].checkpoint) for who, s in servers.items()
    }
    for who, server in servers.items():
        assert again[who].results == [] and not again[who].searched
        assert again[who].checkpoint == first[who].checkpoint
        commands = asked(server)
        assert [c.split(" ")[0] for c in commands if not c.startswith("CAPABILITY")] == [
            "LOGIN",
            "EXAMINE",
            "LOGOUT",
        ]


def test_a_new_message_in_one_mailbox_is_read_once(servers) -> None:
    alex, blair = servers["alex"], servers["blair"]
    seen = {
        "alex": read_new_mail(config(alex, "alex"), None).checkpoint,
        "blair": read_new_mail(config(blair, "blair"), None).checkpoint,
    }
    uid = blair.add("INBOX", REPLY, AT + timedelta(hours=1))
    blair.commands.clear()
    new = read_new_mail(config(blair, "blair"), seen["blair"])
    assert len(new.results) == 1 and new.checkpoint == IMAPCheckpoint(200, uid)
    assert f"UID SEARCH UID {seen['blair'].last_uid + 1}:*" in asked(blair)
    fetches = [c for c in asked(blair) if c.startswith("UID FETCH")]
    assert fetches == [f"UID FETCH {uid} (UID BODY.PEEK[])"]
    assert read_new_mail(config(blair, "blair"), new.checkpoint).results == []
    assert read_new_mail(config(alex, "alex"), seen["alex"]).results == []


def test_without_uidnext_a_search_finds_nothing_new_and_reads_nothing() -> None:
    # `UID 4:*` matches UID 3, the highest, though it is below 4 (RFC 3501 6.4.4).
    with LoopbackIMAP(auth=LOGINS["alex"], uidvalidity=100, uidnext=False) as server:
        for index in range(3):
            server.add("INBOX", REPLY, AT + timedelta(minutes=index))
        again = read_new_mail(config(server, "alex"), IMAPCheckpoint(100, 3))
        assert again.results == [] and again.checkpoint == IMAPCheckpoint(100, 3)
        assert "UID SEARCH UID 4:*" in asked(server)
        assert not any(c.startswith("UID FETCH") for c in asked(server))


def test_a_changed_uidvalidity_reads_the_folder_from_the_start(servers) -> None:
    alex = servers["alex"]
    before = read_new_mail(config(alex, "alex"), None).checkpoint
    alex.renumber("INBOX", 101)
    alex.commands.clear()
    after = read_new_mail(config(alex, "alex"), before)
    assert len(after.results) == 3 and after.checkpoint == IMAPCheckpoint(101, 3)
    assert "UID SEARCH ALL" in asked(alex)


def test_an_unreachable_mailbox_names_its_own_settings_and_the_other_is_read(servers) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(InboundSourceError) as caught:
        read_new_mail(config(servers["alex"], "alex", port=closed), None)
    assert str(caught.value).startswith(f"imap.host=127.0.0.1:{closed}: cannot connect")
    assert "check imap.host, imap.port and imap.ssl" in str(caught.value)
    assert len(read_new_mail(config(servers["blair"], "blair"), None).results) == 1


def test_a_refused_login_says_what_the_server_answered(servers) -> None:
    spec = config(servers["alex"], "alex")
    wrong = spec.model_copy(update={"password": SecretStr("not-it")})
    with pytest.raises(InboundSourceError, match=r"AUTHENTICATIONFAILED.*check imap.username"):
        read_new_mail(wrong, None)
