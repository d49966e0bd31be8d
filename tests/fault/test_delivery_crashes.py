"""kill -9 of a real delivery worker at each crash point, then a re-run once the lease is out.

RELIABILITY.md properties 3 and 4 (delivery side): at most one message per send reaches the
SMTP server; a send whose handover began before the crash becomes `unknown` and is never
resent; every other send is delivered exactly once by the re-run.
"""

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.base import utcnow
from db.models import EmailSend
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.support.killed_worker import run_killed_worker
from tests.support.smtp_server import LoopbackSMTP

pytestmark = [pytest.mark.fault, pytest.mark.flows]

SENDS, LEASE_SECONDS = 6, 2
RULES = {
    "timezone": "UTC",
    "window": {
        "start": "00:00",
        "end": "23:59:59",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    },
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromEmail": "alex@seller.example",
}


def worker_settings(smtp: LoopbackSMTP) -> dict[str, str]:
    """A delivery worker's environment: the loopback server, short leases, one lane."""
    return {
        "EMAIL_TRANSPORT": "smtp",
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "UNSUBSCRIBE_SECRET": "fault-suite-secret-0123456789",
        "CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
        "SMTP_MAX_CONNECTIONS": "1",
    }


def seed(sessions) -> None:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES)
        for i in range(SENDS):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            factories.scheduled_send(
                session, camp, lead, scheduled_for=utcnow() - timedelta(minutes=1)
            )


@pytest.mark.parametrize(
    ("point", "group"),
    [
        ("delivery.after_claim", 10),
        ("delivery.after_handover", 1),
        ("delivery.after_handover", 10),
        ("delivery.after_accept", 1),
        ("delivery.after_accept", 10),
        ("delivery.after_commit", 10),
    ],
)
def test_kill_9_then_rerun_delivers_each_send_at_most_once(worker_env, sessions, point, group):
    """A crash leaves the sends of the group in flight unknown: one with a group of one, all
    three of its batch (one group) with a group of 10; none is ever delivered twice."""
    seed(sessions)
    with LoopbackSMTP() as smtp:
        # One lane, so the crash cuts exactly one group short: with parallel connections each
        # lane's group in flight becomes unknown too (still never resent).
        settings = worker_settings(smtp) | {"DELIVERY_HANDOVER_GROUP": str(group)}
        run_killed_worker("tests.support.run_delivery", ["3"], point, settings)
        delivered_by_dead_worker = len(smtp.messages)
        expected_before = {
            "delivery.after_claim": 0,
            "delivery.after_handover": 0,
            "delivery.after_accept": 1,
            "delivery.after_commit": 3,
        }[point]
        assert delivered_by_dead_worker == expected_before

        time.sleep(LEASE_SECONDS + 0.5)  # the dead worker's leases run out
        for name, value in settings.items():
            worker_env.setenv(name, value)
        report = asyncio.run(send_scheduled_emails(batch_size=3, max_wait_seconds=0))
        per_address = {
            f"lead{i}@buyer.example": smtp.deliveries(f"lead{i}@buyer.example")
            for i in range(SENDS)
        }

    with sessions() as session:
        rows = session.scalars(select(EmailSend)).all()
    statuses = sorted(row.status for row in rows)
    assert set(per_address.values()) <= {0, 1}  # never a second message for any send
    if point in ("delivery.after_handover", "delivery.after_accept"):
        # The handover began; whether it left is not known to the database: flagged, not resent.
        unknown = [row for row in rows if row.status == "unknown"]
        in_flight = min(group, 3)  # the dead worker's batch is one group
        assert len(unknown) == in_flight
        assert all("vanished during the handover" in row.statusReason for row in unknown)
        assert sorted(u.send_id for u in report.unknown) == sorted(row.id for row in unknown)
        delivered = sum(per_address[row.toEmail] for row in unknown)
        assert delivered == (1 if point == "delivery.after_accept" else 0)
        assert statuses == ["sent"] * (SENDS - in_flight) + ["unknown"] * in_flight
    else:
        assert statuses == ["sent"] * SENDS and set(per_address.values()) == {1}
    assert all(row.claimToken is None for row in rows if row.status == "sent")
