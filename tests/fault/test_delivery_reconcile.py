"""kill -9 of a real delivery worker mid-lane, then a re-run that reconciles from the Sent folder.

RELIABILITY.md property 17: the loopback SMTP server files every message it accepts in the
mailbox's IMAP Sent folder, as Gmail and Microsoft 365 do. After the crash and one more run,
every send is `sent` exactly once, nothing is left `unknown`, and no send reached the SMTP
server twice: the handover that left is found in Sent, the one that did not is sent again under
the same Message-ID.
"""

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from db.models import Campaign, EmailSend
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.fault.test_delivery_crashes import LEASE_SECONDS, SENDS, seed, worker_settings
from tests.support.imap_server import LoopbackIMAP
from tests.support.killed_worker import run_killed_worker
from tests.support.smtp_server import LoopbackSMTP

pytestmark = [pytest.mark.fault, pytest.mark.flows]

SENDER, IMAP_PASSWORD = "alex@seller.example", "imap-secret-0123"
SMTP_PASSWORD = "smtp-secret-0123"
SENT = "[Gmail]/Sent Mail"
GRACE_SECONDS = 1


def add_mailbox(sessions, imap: LoopbackIMAP, smtp: LoopbackSMTP) -> None:
    with sessions.begin() as session:
        workspace_id = session.scalars(select(Campaign.workspaceId)).one()
        row = factories.mailbox(
            session, workspace_id, SENDER, imap_port=imap.port, smtp_port=smtp.port
        )
        # Warmed up: the day's cap must not be what defers the re-run's sends.
        row.dailyLimit = row.warmupStart = 1000


@pytest.mark.parametrize(
    ("point", "group", "reached"),
    [
        ("delivery.after_handover", None, 0),  # the default group of 1: never left
        ("delivery.after_accept", None, 1),  # the default group of 1: left before the crash
        ("delivery.after_accept", 10, 1),  # a relay's group of 10: one of three left
    ],
)
def test_a_worker_killed_mid_lane_leaves_every_send_sent_exactly_once(
    worker_env, sessions, point, group, reached
):
    seed(sessions)
    with LoopbackIMAP(auth=(SENDER, IMAP_PASSWORD)) as imap:
        imap.create("INBOX")
        imap.create(SENT, special_use="\\Sent")

        def file_in_sent(raw: bytes) -> None:
            imap.add(SENT, raw, datetime.now(UTC))

        # The mailbox sends under its own login, as Gmail's SMTP does before filing in Sent.
        with LoopbackSMTP(on_accept=file_in_sent, auth={SENDER: SMTP_PASSWORD}) as smtp:
            add_mailbox(sessions, imap, smtp)
            settings = worker_settings(smtp) | {
                "RECONCILE_GRACE_SECONDS": str(GRACE_SECONDS),
                "TEST_IMAP_PASSWORD": IMAP_PASSWORD,
                "TEST_SMTP_PASSWORD": SMTP_PASSWORD,
            }
            if group is not None:
                settings["DELIVERY_HANDOVER_GROUP"] = str(group)
            unset = ["DELIVERY_HANDOVER_GROUP"]
            run_killed_worker("tests.support.run_delivery", ["3"], point, settings, unset=unset)
            assert len(smtp.messages) == reached

            time.sleep(LEASE_SECONDS + 0.5)  # the lease and the grace period run out
            worker_env.delenv("DELIVERY_HANDOVER_GROUP", raising=False)
            for name, value in settings.items():
                worker_env.setenv(name, value)
            report = asyncio.run(send_scheduled_emails(batch_size=3, max_wait_seconds=0))
            messages = smtp.messages

        sent_folder_ids = [
            line.split(b":", 1)[1].strip().decode()
            for raw in (m.raw for m in messages)
            for line in raw.splitlines()
            if line.lower().startswith(b"message-id:")
        ]

    with sessions() as session:
        rows = session.scalars(select(EmailSend)).all()
    in_flight = min(group or 1, 3)
    assert len(report.unknown) == in_flight  # rescued by the re-run, then reconciled
    assert sorted(row.status for row in rows) == ["sent"] * SENDS  # nothing left unknown
    assert len(messages) == SENDS  # each send reached the server exactly once
    assert sorted(m.rcpt_tos[0] for m in messages) == sorted(row.toEmail for row in rows)
    assert sorted(sent_folder_ids) == sorted(row.providerMessageId for row in rows)
    assert all(row.claimToken is None and row.sentAt is not None for row in rows)
    found = [row for row in rows if (row.statusReason or "").startswith("reconciled: its")]
    assert len(found) == reached  # the one that left before the crash was found, not resent
