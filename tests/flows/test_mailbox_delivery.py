"""Delivery per mailbox, end to end: real PostgreSQL, a real loopback SMTP server that requires
AUTH with one login per mailbox, and the `Mailbox` rows an operator adds.

Passwords are sentinels, so the test can prove none reaches a log line, an artifact, a run
state or the database.
"""

import asyncio
import json
import logging
import socket
from collections import Counter
from datetime import datetime, timedelta

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import select, text

from core.mailboxes.mailbox_file import parse_mailbox_file
from db import base
from db.base import utcnow
from db.models import EmailSend, Mailbox
from db.queries.mailboxes import add_mailboxes, pause_mailbox, resume_mailbox
from flows import send_scheduled_emails as flow_module
from tasks import delivery, delivery_lane
from tests import factories
from tests.support.run_records import run_artifacts, run_logs, run_with_artifacts
from tests.support.smtp_server import LoopbackSMTP

pytestmark = pytest.mark.flows

ALEX, BOB = "alex@seller.example", "bob@seller.example"
ALEX_PW, BOB_PW, WRONG_PW = "alex-pw-SENTINEL-7c1e", "bob-pw-SENTINEL-93fa", "wrong-SENTINEL-5d2b"
REFUSED = "535 5.7.8 Authentication credentials invalid"  # aiosmtpd's answer to a wrong password
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "mailboxes": [{"email": ALEX}, {"email": BOB}],
}


@pytest.fixture
def smtp(run_settings, monkeypatch):
    """One server, two logins; the global SMTP_* login is not one of them."""
    with LoopbackSMTP(auth={"alex": ALEX_PW, "bob": BOB_PW}) as server:
        run_settings.update(
            email_transport="smtp",
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="none",
            unsubscribe_secret="test-secret-at-least-16-chars",
            public_base_url="https://links.seller.example",
        )
        monkeypatch.setenv("ALEX_SMTP_PASSWORD", ALEX_PW)
        monkeypatch.setenv("BOB_SMTP_PASSWORD", BOB_PW)
        monkeypatch.setenv("BOB_OLD_PASSWORD", WRONG_PW)
        yield server


def mailbox(email: str, login: str, port: int, password: str) -> dict:
    smtp = {"host": "127.0.0.1", "port": port, "security": "none", "username": login}
    return {
        "email": email,
        "smtp": smtp | {"password": password},
        "dailyLimit": 40,
        "warmup": {"start": 40},
    }


def add(session, workspace_id: str, *entries: dict) -> None:
    document = {"workspaceId": workspace_id, "mailboxes": list(entries)}
    add_mailboxes(session, parse_mailbox_file(document), now=utcnow())


def seed(sessions, n: int, *, rules: dict = RULES, boxes: tuple[dict, ...] = ()):
    """A workspace with its mailbox rows and a campaign of n leads with a due send each."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=1, sendingRules=rules)
        for i in range(n):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            factories.scheduled_send(
                session, camp, lead, scheduled_for=utcnow() - timedelta(minutes=1)
            )
        if boxes:
            add(session, ws.id, *boxes)
        return ws.id


def run(as_of=None):
    flow = flow_module.send_scheduled_emails
    return asyncio.run(run_with_artifacts(flow, as_of=as_of, max_wait_seconds=0))


def sends(sessions) -> list[EmailSend]:
    with sessions() as session:
        return list(session.scalars(select(EmailSend).order_by(EmailSend.toEmail)))


def row(sessions, email: str) -> Mailbox:
    with sessions() as session:
        return session.scalars(select(Mailbox).where(Mailbox.email == email)).one()


def later_by(monkeypatch, offset: timedelta) -> datetime:
    """The delivery path reads the real clock moved by `offset`; returns that moment."""

    def utcnow() -> datetime:
        return base.utcnow() + offset

    for module in (flow_module, delivery, delivery_lane):
        monkeypatch.setattr(module, "utcnow", utcnow)
    return utcnow()


def test_each_message_goes_out_under_its_own_mailboxs_login(smtp, sessions):
    # One password from a Prefect Secret block, resolved inside the run; one from the environment.
    Secret(value=ALEX_PW).save("alex-smtp", overwrite=True)
    seed(
        sessions,
        6,
        boxes=(
            mailbox(ALEX, "alex", smtp.port, "prefect-secret:alex-smtp"),
            mailbox(BOB, "bob", smtp.port, "env:BOB_SMTP_PASSWORD"),
        ),
    )
    report, _, _ = run()
    assert report.total("sent") == 6
    received = smtp.wait_for(6)
    logins = {"alex": ALEX, "bob": BOB}
    for message in received:
        assert message.mail_from == logins[message.auth_login]
        assert message.message["From"].addresses[0].addr_spec == message.mail_from
    assert {m.auth_login for m in received} == {"alex", "bob"}
    assert Counter(r for m in received for r in m.rcpt_tos) == {
        f"lead{i}@buyer.example": 1 for i in range(6)
    }


def test_each_mailbox_logs_in_once_a_run_not_once_a_batch(smtp, sessions, run_settings):
    run_settings.update(smtp_max_connections=2)  # one lane a mailbox, never split
    boxes = (
        mailbox(ALEX, "alex", smtp.port, "env:ALEX_SMTP_PASSWORD"),
        mailbox(BOB, "bob", smtp.port, "env:BOB_SMTP_PASSWORD"),
    )
    seed(sessions, 6, boxes=boxes)
    before = smtp.connections
    flow = flow_module.send_scheduled_emails
    report, _, _ = asyncio.run(run_with_artifacts(flow, batch_size=2, max_wait_seconds=0))
    assert report.total("sent") == 6
    assert {m.auth_login for m in smtp.wait_for(6)} == {"alex", "bob"}
    # Three batches over two mailboxes: each mailbox's connection is kept for the next batch.
    assert smtp.connections - before == 2


def test_a_wrong_password_disconnects_that_mailbox_only_until_resumed(smtp, sessions, monkeypatch):
    alex = mailbox(ALEX, "alex", smtp.port, "env:ALEX_SMTP_PASSWORD")
    workspace_id = seed(
        sessions, 8, boxes=(alex, mailbox(BOB, "bob", smtp.port, "env:BOB_OLD_PASSWORD"))
    )
    report, _, first_run = run()

    bob = row(sessions, BOB)
    assert (bob.status, bob.statusReason) == (
        "disconnected",
        "535 5.7.8 Authentication credentials invalid",
    )
    assert row(sessions, ALEX).status == "active"
    held = [s for s in sends(sessions) if s.mailbox == BOB]
    sent = [s for s in sends(sessions) if s.status == "sent"]
    assert held and len(held) + len(sent) == 8
    assert {m.auth_login for m in smtp.messages} == {"alex"}
    assert len(smtp.messages) == len(sent) == report.total("sent")
    assert report.total("deferred") == len(held) and report.total("failed") == 0
    for send in held:
        assert (send.status, send.attempts) == ("scheduled", 0)
        assert (
            send.statusReason
            == "mailbox disconnected: 535 5.7.8 Authentication credentials invalid"
        )
        assert send.scheduledFor > utcnow() + timedelta(minutes=55)

    # The operator fixes the reference and resumes the mailbox: its sends go out, once each.
    with sessions.begin() as session:
        add(session, workspace_id, mailbox(BOB, "bob", smtp.port, "env:BOB_SMTP_PASSWORD"))
        assert resume_mailbox(session, bob.id, now=utcnow()) == "disconnected"
    # An hour later (the deferral's recheck), the held sends are due again.
    resumed, _, last_run = run(later_by(monkeypatch, timedelta(minutes=61)))
    assert resumed.total("sent") == len(held)
    assert {m.auth_login for m in smtp.messages[len(sent) :]} == {"bob"}
    assert Counter(r for m in smtp.messages for r in m.rcpt_tos) == {
        f"lead{i}@buyer.example": 1 for i in range(8)
    }
    assert {(s.status, s.attempts) for s in sends(sessions)} == {("sent", 1)}
    assert_no_password(sessions, first_run, last_run)


def assert_no_password(sessions, *run_ids) -> None:
    """No password in the runs' logs, artifacts, flow and task run states, or the database."""
    texts = [f"{log.name} {log.message}" for log in asyncio.run(run_logs(*run_ids))]
    texts += [
        f"{a.key} {a.description} {json.dumps(a.data, default=str)}"
        for a in asyncio.run(run_artifacts(*run_ids))
    ]

    async def states() -> list[str]:
        only = FlowRunFilter(id=FlowRunFilterId(any_=list(run_ids)))
        async with get_client() as client:
            flows = await client.read_flow_runs(flow_run_filter=only)
            tasks = await client.read_task_runs(flow_run_filter=only)
        return [f"{f.parameters} {f.state.message if f.state else ''}" for f in flows] + [
            f"{t.task_inputs} {t.state.message if t.state else ''}" for t in tasks
        ]

    texts += asyncio.run(states())
    with sessions() as session:
        dump = session.execute(
            text("""SELECT string_agg(t::text, ' ') FROM (
                        SELECT m::text FROM "Mailbox" m UNION ALL SELECT s::text FROM "EmailSend" s
                    ) t""")
        ).scalar_one()
        texts.append(dump)
    assert texts
    for secret in (ALEX_PW, BOB_PW, WRONG_PW):
        assert not [t for t in texts if secret in t], secret


def test_a_paused_mailbox_defers_its_sends_with_the_reason(smtp, sessions):
    rules = {**RULES, "mailboxes": [{"email": ALEX}]}
    seed(
        sessions,
        3,
        rules=rules,
        boxes=(mailbox(ALEX, "alex", smtp.port, "env:ALEX_SMTP_PASSWORD"),),
    )
    with sessions.begin() as session:
        assert pause_mailbox(
            session, row(sessions, ALEX).id, reason="bounces look high", now=utcnow()
        )
    report, _, _ = run()
    assert report.total("deferred") == 3 and report.total("sent") == 0 and smtp.messages == []
    for send in sends(sessions):
        assert (send.status, send.attempts) == ("scheduled", 0)
        assert send.statusReason == "mailbox paused: bounces look high"
    assert row(sessions, ALEX).status == "paused"  # an operator's pause is not overwritten


def test_a_password_that_cannot_be_resolved_disconnects_with_the_reason(smtp, sessions):
    rules = {**RULES, "mailboxes": [{"email": BOB}]}
    seed(sessions, 2, rules=rules, boxes=(mailbox(BOB, "bob", smtp.port, "env:BOB_NOWHERE"),))
    report, _, _ = run()
    reason = "env:BOB_NOWHERE: the environment variable BOB_NOWHERE is not set"
    assert (row(sessions, BOB).status, row(sessions, BOB).statusReason) == ("disconnected", reason)
    assert report.total("deferred") == 2 and smtp.messages == []
    assert {(s.status, s.statusReason) for s in sends(sessions)} == {
        ("scheduled", f"mailbox disconnected: {reason}")
    }


def test_an_unreachable_server_disconnects_its_mailbox_and_others_carry_on(smtp, sessions, caplog):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every connection is refused
    seed(
        sessions,
        6,
        boxes=(
            mailbox(ALEX, "alex", smtp.port, "env:ALEX_SMTP_PASSWORD"),
            mailbox(BOB, "bob", port, "env:BOB_SMTP_PASSWORD"),
        ),
    )
    caplog.set_level(logging.WARNING)
    report, _, _ = run()
    bob = row(sessions, BOB)
    assert bob.status == "disconnected" and "Connection refused" in bob.statusReason
    held = [s for s in sends(sessions) if s.mailbox == BOB]
    assert held and report.total("sent") == 6 - len(held) == len(smtp.messages)
    assert {(s.status, s.attempts) for s in held} == {("scheduled", 0)}


def test_a_server_lost_mid_group_gives_the_rest_back_without_an_attempt(
    smtp, sessions, run_settings, monkeypatch
):
    run_settings.update(smtp_max_connections=1, delivery_handover_group=10)  # one lane, one group
    rules = {**RULES, "mailboxes": [{"email": ALEX}]}
    alex = mailbox(ALEX, "alex", smtp.port, "env:ALEX_SMTP_PASSWORD")
    seed(sessions, 4, rules=rules, boxes=(alex,))

    def server_gone_after_the_first_accept(name: str) -> None:
        if name == "delivery.after_accept" and smtp.messages:
            smtp.stop()

    monkeypatch.setattr(delivery_lane, "failpoint", server_gone_after_the_first_accept)
    report, _, _ = run()
    assert report.total("sent") == 1 and report.total("deferred") == 3
    reason = row(sessions, ALEX).statusReason
    assert row(sessions, ALEX).status == "disconnected" and "Connection refused" in reason
    by_status = Counter((s.status, s.attempts) for s in sends(sessions))
    # The send the lost server was asked to take was tried once; the two behind it in its
    # group were handed over but never transmitted, so their attempt is taken back.
    assert by_status == {("sent", 1): 1, ("scheduled", 1): 1, ("scheduled", 0): 2}
    held = [s for s in sends(sessions) if s.status == "scheduled"]
    assert {s.statusReason for s in held} == {f"mailbox disconnected: {reason}"}
