"""`send-scheduled-emails` reconciling `unknown` sends from each mailbox's IMAP Sent folder.

RELIABILITY.md property 17 under the Prefect harness, with real PostgreSQL, SMTP and IMAP on
loopback: found means `sent`, long absent means scheduled again and delivered in the same run
under the same Message-ID, recently handed over stays `unknown`; a mailbox that cannot be
read, and one without a row, leave their sends `unknown`, reported in the run's artifact.
"""

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.base import utcnow
from db.models import EmailSend
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.flows.test_send_scheduled_emails import RULES
from tests.support.imap_server import LoopbackIMAP
from tests.support.run_records import run_log_messages, run_with_artifacts
from tests.support.smtp_server import LoopbackSMTP

pytestmark = pytest.mark.flows

ALEX, SAM, PAT = "alex@seller.example", "sam@seller.example", "pat@seller.example"
KIM = "kim@seller.example"  # its server does not file what it sends in Sent
PASSWORD = "imap-secret-0123"
SMTP_PASSWORD = "smtp-secret-0123"


@pytest.fixture
def smtp(run_settings, monkeypatch):
    """The loopback SMTP server, with ALEX's own login: a mailbox row sends under its login."""
    with LoopbackSMTP(auth={ALEX: SMTP_PASSWORD}) as server:
        run_settings.update(
            email_transport="smtp",
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="none",
            unsubscribe_secret="test-secret-at-least-16-chars",
            public_base_url="https://links.seller.example",
        )
        monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
        yield server


def seed(sessions, imap_port: int, closed_port: int, smtp_port: int) -> dict[str, str]:
    """Sends by name: six unknown (found, gone: old and absent, fresh: absent, unreachable,
    norow, unfiled: absent like the earlier send of its mailbox) and that earlier `sent` one."""
    handed = {"found": 3600, "gone": 3600, "fresh": 10, "unreachable": 3600, "norow": 3600}
    handed |= {"earlier": 7200, "unfiled": 3600}
    mailbox = {"unreachable": SAM, "norow": PAT, "earlier": KIM, "unfiled": KIM}
    ids = {}
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES)
        factories.mailbox(session, ws.id, ALEX, imap_port=imap_port, smtp_port=smtp_port)
        factories.mailbox(session, ws.id, SAM, imap_port=closed_port, username=ALEX)
        factories.mailbox(session, ws.id, KIM, imap_port=imap_port, username=ALEX)
        for name, age in handed.items():
            lead = factories.lead(session, ws, email=f"{name}@buyer.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            send = factories.scheduled_send(
                session,
                camp,
                lead,
                scheduled_for=utcnow() - timedelta(hours=2),
                status="sent" if name == "earlier" else "unknown",
                mailbox=mailbox.get(name, ALEX),
                attemptedAt=utcnow() - timedelta(seconds=age),
                claimToken="dead",
                attempts=1,
            )
            send.providerMessageId = f"<{send.id}@seller.example>"
            ids[name] = send.id
    return ids


def test_unknown_sends_are_settled_from_the_sent_folder_and_the_rest_reported(
    smtp, sessions, monkeypatch
):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    with LoopbackIMAP(auth=(ALEX, PASSWORD)) as closed:
        closed_port = closed.port
    with LoopbackIMAP(auth=(ALEX, PASSWORD)) as imap:
        ids = seed(sessions, imap.port, closed_port, smtp.port)
        imap.create("Sent Items", special_use="\\Sent")
        # INTERNALDATE has whole seconds.
        filed_at = (utcnow() - timedelta(minutes=59)).replace(microsecond=0)
        imap.add(
            "Sent Items", f"Message-ID: <{ids['found']}@seller.example>\r\n\r\n".encode(), filed_at
        )
        report, artifacts, run_id = asyncio.run(
            run_with_artifacts(send_scheduled_emails, max_wait_seconds=0)
        )
        logs = asyncio.run(run_log_messages(run_id))

    with sessions() as session:
        rows = {row.id: row for row in session.scalars(select(EmailSend))}
    status = {name: rows[send_id].status for name, send_id in ids.items()}
    assert status == {
        "found": "sent",
        "gone": "sent",  # scheduled again, then delivered by this run's claim
        "fresh": "unknown",
        "unreachable": "unknown",
        "norow": "unknown",
        "earlier": "sent",
        "unfiled": "unknown",  # never resent on the word of a folder that lacks "earlier" too
    }
    assert rows[ids["found"]].sentAt == filed_at
    # Left unknown means untouched: the dead worker's token still lets its late answer land.
    assert all(rows[ids[n]].claimToken == "dead" for n in ("fresh", "unreachable", "unfiled"))
    (again,) = smtp.wait_for(1)  # only the one that never left goes out, once
    assert again.rcpt_tos == ("gone@buyer.example",)
    assert again.message["Message-ID"] == f"<{ids['gone']}@seller.example>"
    assert report.total("sent") == 1

    data = artifacts["send-scheduled-emails-reconciled"].data
    table = json.loads(data) if isinstance(data, str) else data
    lines = {line["send_id"]: line for line in table}
    outcome = {name: lines[send_id]["outcome"] for name, send_id in ids.items() if send_id in lines}
    assert outcome == {
        "found": "sent",
        "gone": "rescheduled",
        "fresh": "waiting",
        "unreachable": "unsearchable",
        "norow": "unsearchable",
        "unfiled": "unproven",
    }
    assert "neither is" in lines[ids["unfiled"]]["reason"]
    assert "connect failed" in lines[ids["unreachable"]]["reason"]
    assert "no Mailbox row" in lines[ids["norow"]]["reason"]
    assert any(
        "reconciled unknown sends: 1 sent, 1 rescheduled, 1 waiting, 1 unproven" in m for m in logs
    )
    assert any("Sent folder not searched: connect failed" in m for m in logs)
    assert not any("@" in m for m in logs if "Sent folder" in m or "reconciled" in m)
    assert not any(PASSWORD in m for m in logs) and PASSWORD not in json.dumps(table)


def test_a_dry_run_reconciles_nothing(smtp, sessions, monkeypatch):
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    with LoopbackIMAP(auth=(ALEX, PASSWORD)) as imap:
        ids = seed(sessions, imap.port, imap.port, smtp.port)
        asyncio.run(send_scheduled_emails(max_wait_seconds=0, dry_run=True))
        assert imap.logins == 0
    with sessions() as session:
        status = {s.id: s.status for s in session.scalars(select(EmailSend))}
    assert {status[send_id] for name, send_id in ids.items() if name != "earlier"} == {"unknown"}
