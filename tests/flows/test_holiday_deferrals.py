"""`send-scheduled-emails` on a public holiday: real PostgreSQL, real SMTP on loopback.

The holiday has to be "today", so the delivery path's clock is moved to Thanksgiving 2027.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from db import base
from db.models import EmailSend
from flows import send_scheduled_emails as flow_module
from tasks import delivery, delivery_lane
from tests import factories

pytestmark = pytest.mark.flows

THANKSGIVING_10AM = datetime(2027, 11, 25, 15, 0, tzinfo=UTC)  # Thursday 10:00 in New York
FRIDAY_9AM = datetime(2027, 11, 26, 14, 0, tzinfo=UTC)  # the next working day's window opens
RULES = {
    "timezone": "UTC",
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromEmail": "alex@seller.example",
    "skipHolidays": True,
}


def set_clock(monkeypatch, at: datetime) -> None:
    """Every module of the delivery path reads `at` as now, moving on with the real clock."""
    offset = at - base.utcnow()

    def utcnow() -> datetime:
        return base.utcnow() + offset

    for module in (flow_module, delivery, delivery_lane):
        monkeypatch.setattr(module, "utcnow", utcnow)


def test_a_due_send_on_a_holiday_waits_for_the_next_working_day(smtp, sessions, monkeypatch):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=1, sendingRules=RULES)
        # A lead in New York with no country: its zone makes it American.
        lead = factories.lead(session, ws, email="ny@buyer.example", timezone="America/New_York")
        factories.enrolment(session, camp, lead, currentStepOrder=2)
        send_id = factories.scheduled_send(
            session, camp, lead, scheduled_for=THANKSGIVING_10AM - timedelta(minutes=1)
        ).id

    set_clock(monkeypatch, THANKSGIVING_10AM)
    report = asyncio.run(flow_module.send_scheduled_emails(as_of=THANKSGIVING_10AM))
    with sessions() as session:
        row = session.get(EmailSend, send_id)
        assert report.total("deferred") == 1 and smtp.messages == []
        assert (row.status, row.scheduledFor) == ("scheduled", FRIDAY_9AM)
        assert row.statusReason == "holiday: Thanksgiving Day (US)"

    # Still Thanksgiving evening: not due yet, nothing leaves early.
    evening = FRIDAY_9AM - timedelta(hours=2)
    set_clock(monkeypatch, evening)
    assert asyncio.run(flow_module.send_scheduled_emails(as_of=evening)).total("sent") == 0

    set_clock(monkeypatch, FRIDAY_9AM + timedelta(seconds=30))
    report = asyncio.run(
        flow_module.send_scheduled_emails(as_of=FRIDAY_9AM + timedelta(seconds=30))
    )
    assert report.total("sent") == 1
    (message,) = smtp.wait_for(1)
    assert message.rcpt_tos == ("ny@buyer.example",)
    with sessions() as session:
        row = session.get(EmailSend, send_id)
        assert row.status == "sent" and row.attempts == 1
        assert FRIDAY_9AM <= row.sentAt < FRIDAY_9AM + timedelta(minutes=5)
