"""`ingest-engagement-events` over two sending mailboxes on loopback IMAP servers: replies from
every mailbox, incrementally; an unreachable mailbox is reported and skipped."""

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from sqlalchemy import select

from core.engagement.report import IngestColumn, MailboxOutcome
from core.mailboxes.mailbox_file import parse_mailbox_file
from db.models import Campaign, EmailSend, Mailbox
from db.queries.mailboxes import add_mailboxes
from flows.ingest_engagement_events import ingest_engagement_events
from tests.flows.test_ingest_engagement_events import seed
from tests.support.imap_server import LoopbackIMAP
from tests.support.run_records import run_logs, run_with_artifacts

pytestmark = pytest.mark.flows

MAIL = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "inbox"
REPLY = (MAIL / "new" / "1764151201.M1P4242.reply-in-reply-to").read_bytes()
OUT_OF_OFFICE = (MAIL / "new" / "1764151204.M4P4242.ooo-auto-submitted").read_bytes()
AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# Sentinels: neither may appear in a log line or an artifact.
PASSWORDS = {"alex": "alex-Sentinel-pw-1", "blair": "blair-Sentinel-pw-2"}


@pytest.fixture
def servers(monkeypatch) -> Iterator[dict[str, LoopbackIMAP]]:
    with (
        LoopbackIMAP(auth=(_address("alex"), PASSWORDS["alex"]), uidvalidity=100) as alex,
        LoopbackIMAP(auth=(_address("blair"), PASSWORDS["blair"]), uidvalidity=200) as blair,
    ):
        for who, password in PASSWORDS.items():
            monkeypatch.setenv(f"{who.upper()}_IMAP_PASSWORD", password)
        alex.add("INBOX", OUT_OF_OFFICE, AT)
        blair.add("INBOX", REPLY, AT)
        yield {"alex": alex, "blair": blair}


def _address(who: str) -> str:
    return f"{who}@seller.example"


def add(sessions, workspace_id: str, servers: dict[str, LoopbackIMAP], **ports: int) -> None:
    """A Mailbox row per server, each with its own login; `ports` overrides one's port."""
    entries = [
        {
            "email": _address(who),
            "smtp": {"host": "smtp.example", "username": _address(who), "password": "env:X"},
            "imap": {
                "host": server.host,
                "port": ports.get(who, server.port),
                "ssl": False,
                "username": _address(who),
                "password": f"env:{who.upper()}_IMAP_PASSWORD",
            },
        }
        for who, server in servers.items()
    ]
    document = parse_mailbox_file({"workspaceId": workspace_id, "mailboxes": entries})
    with sessions.begin() as session:
        add_mailboxes(session, document, now=AT)


def workspace_of(sessions, send_id: str) -> str:
    with sessions() as session:
        return session.scalars(
            select(Campaign.workspaceId).join(EmailSend).where(EmailSend.id == send_id)
        ).one()


def run(**params):
    return asyncio.run(ingest_engagement_events(**params))


def checkpoints(sessions) -> dict[str, tuple[int | None, int | None]]:
    with sessions() as session:
        rows = session.scalars(select(Mailbox)).all()
        return {row.email: (row.imapUidValidity, row.imapLastUid) for row in rows}


def reads(server: LoopbackIMAP) -> list[str]:
    """The SEARCH and FETCH commands the server received."""
    return [c for c in server.commands if " UID SEARCH " in c or " UID FETCH " in c]


def test_two_mailboxes_are_read_incrementally_and_a_reply_stops_the_follow_up(
    run_settings, sessions, servers
):
    first, follow_up = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    add(sessions, workspace_of(sessions, first), servers)
    report = run(source="live")
    assert {m.email: (m.outcome, m.messages) for m in report.mailboxes} == {
        "alex@seller.example": (MailboxOutcome.read, 1),
        "blair@seller.example": (MailboxOutcome.read, 1),
    }
    assert report.stopped == {"replied": 1}
    with sessions() as session:
        assert session.get(EmailSend, follow_up).status == "cancelled"
    assert checkpoints(sessions) == {
        "alex@seller.example": (100, 1),
        "blair@seller.example": (200, 1),
    }

    for server in servers.values():
        server.commands.clear()
    again = run(source="imap")
    assert [m.outcome for m in again.mailboxes] == [MailboxOutcome.unchanged] * 2
    assert again.total(IngestColumn.new) + again.total(IngestColumn.duplicate) == 0
    assert reads(servers["alex"]) == reads(servers["blair"]) == []

    uid = servers["alex"].add("INBOX", REPLY, AT + timedelta(hours=1))
    third = run(source="live")
    assert {m.email: m.outcome for m in third.mailboxes} == {
        "alex@seller.example": MailboxOutcome.read,
        "blair@seller.example": MailboxOutcome.unchanged,
    }
    # The same reply from another mailbox: one message read, and the event is a duplicate.
    assert third.mailboxes[0].messages == 1 and third.total(IngestColumn.new) == 0
    assert checkpoints(sessions)["alex@seller.example"] == (100, uid)
    # Only the new message is fetched: commands were cleared after the first run.
    assert [c.split(" ", 3)[3] for c in reads(servers["alex"]) if "FETCH" in c] == [
        f"{uid} (UID BODY.PEEK[])"
    ]


def test_an_unreachable_mailbox_is_reported_and_skipped_and_the_other_is_read(
    run_settings, sessions, servers, monkeypatch
):
    first, _ = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    add(sessions, workspace_of(sessions, first), servers, alex=closed)
    report, artifacts, run_id = asyncio.run(
        run_with_artifacts(ingest_engagement_events, source="live")
    )
    skipped, read = report.mailboxes
    assert (skipped.email, skipped.outcome) == ("alex@seller.example", MailboxOutcome.skipped)
    assert skipped.answer.startswith(f"imap.host=127.0.0.1:{closed}: cannot connect")
    assert (read.outcome, report.stopped) == (MailboxOutcome.read, {"replied": 1})
    table = artifacts["ingest-engagement-events-mailboxes"].data
    assert "alex@seller.example" in table and "cannot connect" in table and "skipped" in table
    assert checkpoints(sessions)["alex@seller.example"] == (None, None)
    logs = [log.message for log in asyncio.run(run_logs(run_id))]
    assert any(
        line.startswith("mailbox alex@seller.example (workspace ") and "cannot connect" in line
        for line in logs
    )

    # An unset password variable and a refused login are skipped the same way.
    monkeypatch.delenv("ALEX_IMAP_PASSWORD")
    monkeypatch.setenv("BLAIR_IMAP_PASSWORD", "wrong-Sentinel-pw")
    add(sessions, workspace_of(sessions, first), servers)
    later, artifacts, run_id = asyncio.run(
        run_with_artifacts(ingest_engagement_events, source="imap")
    )
    answers = {m.email: m.answer for m in later.mailboxes}
    assert answers["alex@seller.example"] == (
        "env:ALEX_IMAP_PASSWORD: the environment variable ALEX_IMAP_PASSWORD is not set"
    )
    assert "AUTHENTICATIONFAILED" in answers["blair@seller.example"]
    shown = [log.message for log in asyncio.run(run_logs(run_id))]
    shown += [str(artifact.data) for artifact in artifacts.values()]
    for secret in [*PASSWORDS.values(), "wrong-Sentinel-pw"]:
        assert not any(secret in text for text in shown)


def test_a_dry_run_or_a_window_reads_but_keeps_no_checkpoint(run_settings, sessions, servers):
    first, _ = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    add(sessions, workspace_of(sessions, first), servers)
    dry = run(source="imap", dry_run=True)
    assert dry.total(IngestColumn.new) == 2 and [m.messages for m in dry.mailboxes] == [1, 1]
    windowed = run(source="imap", until=AT + timedelta(days=365))
    assert windowed.total(IngestColumn.new) == 2
    assert set(checkpoints(sessions).values()) == {(None, None)}


def test_the_imap_host_inbox_is_still_read_beside_the_mailboxes(run_settings, sessions, servers):
    first, _ = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    add(sessions, workspace_of(sessions, first), {"alex": servers["alex"]})
    blair = servers["blair"]
    run_settings.update(
        imap_host=blair.host,
        imap_port=blair.port,
        imap_ssl=False,
        imap_username=_address("blair"),
        imap_password=PASSWORDS["blair"],
    )
    report = run(source="live")
    assert report.stopped == {"replied": 1}
    assert [m.email for m in report.mailboxes] == ["alex@seller.example"]
    sources = {row.source for row in report.rows.values()}
    assert f"imap:{_address('blair')}@127.0.0.1/INBOX" in sources


def test_a_password_in_a_prefect_secret_block_is_loaded_for_the_read(
    run_settings, sessions, servers
):
    first, _ = seed(sessions, "ada@lead.example", "<abc123@seller.example>")
    Secret(value=PASSWORDS["blair"]).save("blair-imap", overwrite=True)
    document = parse_mailbox_file(
        {
            "workspaceId": workspace_of(sessions, first),
            "mailboxes": [
                {
                    "email": _address("blair"),
                    "smtp": {"host": "smtp.example", "username": "b", "password": "env:X"},
                    "imap": {
                        "host": servers["blair"].host,
                        "port": servers["blair"].port,
                        "ssl": False,
                        "username": _address("blair"),
                        "password": "prefect-secret:blair-imap",
                    },
                }
            ],
        }
    )
    with sessions.begin() as session:
        add_mailboxes(session, document, now=AT)
    report = run(source="imap")
    assert [(m.outcome, m.messages) for m in report.mailboxes] == [(MailboxOutcome.read, 1)]
    assert report.stopped == {"replied": 1}
