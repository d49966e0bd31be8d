"""`ingest-engagement-events` over a Maildir of bounces that are not RFC 3464 to the letter."""

from pathlib import Path

import pytest
from sqlalchemy import select

from core.engagement.report import IngestColumn
from db.models import CampaignLead, EmailSend, EngagementEvent, Suppression
from tests.flows.test_ingest_engagement_events import run, seed

pytestmark = pytest.mark.flows

BOUNCES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
UNREADABLE = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.lead.example>
To: sam@seller.example
Subject: Mail system notice
Date: Wed, 26 Nov 2025 10:00:00 +0000
Message-ID: <notice.1@mx.lead.example>

Your mailbox settings were updated.
"""


def maildir(root: Path, messages: dict[str, bytes]) -> Path:
    for folder in ("cur", "new", "tmp"):
        (root / folder).mkdir(parents=True)
    for name, raw in messages.items():
        (root / "new" / name).write_bytes(raw)
    return root


def test_a_prose_bounce_stops_its_address_and_says_which_reader_read_it(
    run_settings, sessions, tmp_path
):
    # A German Exchange NDR in prose: flufl.bounce does not know it, the prose reader does.
    first, follow_up = seed(sessions, "ausgeschieden@lead.example", "<b23.qidea@seller.example>")
    inbox = maildir(
        tmp_path / "inbox",
        {
            "1764237765.M1P1.ndr": (BOUNCES / "german-exchange-hard.eml").read_bytes(),
            "1764237766.M2P1.notice": UNREADABLE,
        },
    )
    report = run(source="mailbox", path=str(inbox))
    assert report.total(IngestColumn.new) == 1 and report.stopped == {"bounced": 1}
    # The notice no reader understands is reported with why, not dropped or taken for a reply.
    (unread,) = report.malformed
    assert unread.line == 2
    assert unread.reason.startswith("mail from mailer-daemon: neither flufl.bounce nor the prose")
    with sessions() as session:
        (bounce,) = session.scalars(select(EngagementEvent)).all()
        assert (bounce.type, bounce.emailSendId) == ("bounce", first)
        assert bounce.eventMetadata["bounceReader"] == "prose"
        assert bounce.eventMetadata["bounceKind"] == "hard"
        assert session.scalars(select(CampaignLead.status)).one() == "bounced"
        assert session.scalars(select(Suppression.email)).all() == ["ausgeschieden@lead.example"]
        assert session.get(EmailSend, follow_up).status == "cancelled"
    again = run(source="mailbox", path=str(inbox))
    assert again.total(IngestColumn.new) == 0 and again.total(IngestColumn.duplicate) == 1


def test_a_soft_prose_bounce_is_counted_without_stopping(run_settings, sessions, tmp_path):
    # Exim's delay warning quotes no Message-ID of ours: it finds the send by its address.
    seed(sessions, "slow@lead.example", "<b06.qidea@seller.example>")
    inbox = maildir(
        tmp_path / "inbox",
        {"1764243000.M1P1.delay": (BOUNCES / "exim-delay-warning-soft.eml").read_bytes()},
    )
    report = run(source="mailbox", path=str(inbox))
    assert report.total(IngestColumn.new) == 1 and report.stopped == {}
    with sessions() as session:
        (bounce,) = session.scalars(select(EngagementEvent)).all()
        assert bounce.eventMetadata["bounceKind"] == "soft"
        assert bounce.eventMetadata["bounceReader"] == "flufl.bounce"
        enrolment = session.scalars(select(CampaignLead)).one()
        assert (enrolment.status, enrolment.softBounces) == ("active", 1)
        assert session.scalars(select(Suppression.email)).all() == []
