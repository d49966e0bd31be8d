"""Circuit breakers end to end (RELIABILITY.md property 18): real PostgreSQL, a loopback SMTP
server that requires AUTH and rejects unknown users, a loopback IMAP inbox holding DSNs, the web
app receiving a provider's complaints, and Prefect's asserting events client.

A mailbox or campaign over its line is paused before its next handover, with the figures in the
reason; what waits behind the pause is `scheduled`, never failed; a resume counts afresh.
"""

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prefect.blocks.notifications import SlackWebhook
from prefect.client.orchestration import get_client
from prefect.events import Event
from prefect.events.actions import SendNotification
from prefect.events.clients import AssertingEventsClient
from prefect.events.schemas.automations import AutomationCore
from prefect.events.worker import EventsWorker
from prefect.testing.fixtures import asserting_events_worker  # noqa: F401  (Prefect's fixture)
from pydantic import SecretStr
from sqlalchemy import select

from db.base import utcnow
from db.models import Campaign, EmailSend, Mailbox
from db.queries.mailboxes import resume_campaign, resume_mailbox
from flows.ingest_engagement_events import ingest_engagement_events
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.flows.test_mailbox_delivery import later_by
from tests.support.imap_server import LoopbackIMAP
from tests.support.run_records import run_with_artifacts
from tests.support.smtp_server import LoopbackSMTP
from tests.support.web_server import serving
from web.app import create_app
from web.webhooks import WebhookSecrets

pytestmark = pytest.mark.flows

ALEX = "alex@seller.example"
NAME = "Q4 outreach"  # the campaign's name
# Sentinels: neither may reach an event, a reason or a row.
SMTP_PW, IMAP_PW = "smtp-pw-SENTINEL-4f2a", "imap-pw-SENTINEL-9c0d"
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "mailboxes": [{"email": ALEX}],
}
UNKNOWN_USER = "550 5.1.1 <{}>: Recipient address rejected: User unknown"
DSN = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "mail"
    / "inbox"
    / "cur"
    / "1764151206.M6P4242.dsn-hard"
).read_bytes()


@pytest.fixture
def smtp(run_settings, monkeypatch) -> Iterator[LoopbackSMTP]:
    """One login, the mailbox row's (and the global one, for a campaign without a row); one
    connection, so a lone mailbox's sends go out in their order."""
    with LoopbackSMTP(auth={ALEX: SMTP_PW}) as server:
        run_settings.update(
            email_transport="smtp",
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="none",
            smtp_username=ALEX,
            smtp_password=SMTP_PW,
            smtp_max_connections=1,
            unsubscribe_secret="test-secret-at-least-16-chars",
            public_base_url="https://links.seller.example",
        )
        monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PW)
        monkeypatch.setenv("TEST_IMAP_PASSWORD", IMAP_PW)
        yield server


def lead(i: int) -> str:
    return f"lead{i:03}@buyer.example"


def seed(
    sessions,
    due: int,
    *,
    sent: int = 0,
    rules: dict = RULES,
    row: bool = True,
    imap_port: int | None = None,
    smtp_port: int | None = None,
) -> tuple[str, str | None]:
    """A campaign of `sent` leads written to an hour ago and `due` leads due now, in that order,
    from ALEX (a `Mailbox` row unless `row` is false); returns (campaign id, mailbox id)."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=1, sendingRules=rules)
        start = utcnow() - timedelta(hours=2)
        for i in range(sent + due):
            ld = factories.lead(session, ws, email=lead(i))
            factories.enrolment(session, camp, ld, currentStepOrder=2)
            if i < sent:
                factories.scheduled_send(
                    session,
                    camp,
                    ld,
                    status="sent",
                    mailbox=ALEX,
                    attemptedAt=utcnow() - timedelta(hours=1),
                    sentAt=utcnow() - timedelta(hours=1),
                    providerMessageId=f"<sent{i}@seller.example>",
                )
            else:
                factories.scheduled_send(
                    session, camp, ld, scheduled_for=start + timedelta(seconds=i)
                )
        mailbox_id = None
        if row:
            mailbox = factories.mailbox(
                session, ws.id, ALEX, imap_port=imap_port, smtp_port=smtp_port
            )
            mailbox.dailyLimit = mailbox.warmupStart = 500  # warmed up: the cap is no factor
            mailbox_id = mailbox.id
        return camp.id, mailbox_id


def deliver(as_of: datetime | None = None):
    flow = send_scheduled_emails
    return asyncio.run(run_with_artifacts(flow, as_of=as_of, max_wait_seconds=0))[0]


def sends(sessions) -> list[EmailSend]:
    with sessions() as session:
        return list(session.scalars(select(EmailSend).order_by(EmailSend.toEmail)))


def statuses(sessions, campaign_id: str, mailbox_id: str | None) -> list[tuple]:
    """(status, statusReason) of the campaign, and of the mailbox row when it has one."""
    with sessions() as session:
        rows: list = [session.get(Campaign, campaign_id)]
        if mailbox_id is not None:
            rows.insert(0, session.get(Mailbox, mailbox_id))
        return [(r.status, r.statusReason) for r in rows]


def paused_events(worker: EventsWorker) -> list[Event]:
    """The breaker events emitted so far (Prefect's own run events left out)."""
    worker.wait_until_empty()
    client = worker._client
    assert isinstance(client, AssertingEventsClient)
    return [e for e in client.events if e.event.startswith("campaign-pipeline.")]


def assert_clean(events: list[Event]) -> None:
    """No password and no lead's address in an event."""
    for event in events:
        dumped = event.model_dump_json()
        assert SMTP_PW not in dumped and IMAP_PW not in dumped
        assert "buyer.example" not in dumped


def test_a_bounce_storm_pauses_the_mailbox_and_campaign_at_the_line_and_a_resume_sends_the_rest(
    smtp,
    sessions,
    monkeypatch,
    asserting_events_worker,  # noqa: F811
):
    campaign_id, mailbox_id = seed(sessions, 120, smtp_port=smtp.port)
    for i in range(9, 120, 10):  # every 10th recipient does not exist
        smtp.reject_rcpt(lead(i), UNKNOWN_USER.format(lead(i)))

    report = deliver()

    line = "hard bounces 5 of 50 sends (10.0%) in 7 days ≥ 3%"
    # Four bounces in 40 sends (10%) are not a sample yet; the fifth, at the 50th send, trips
    # both breakers, and nothing after it reaches the server.
    assert [smtp.attempts(lead(i)) for i in range(120)] == [1] * 50 + [0] * 70
    assert (report.total("sent"), report.total("bounced"), report.total("deferred")) == (45, 5, 70)
    assert report.total("failed") == 0
    assert statuses(sessions, campaign_id, mailbox_id) == [("paused", line), ("paused", line)]
    waiting = sends(sessions)[50:]
    assert {(s.status, s.attempts, s.statusReason) for s in waiting} == {
        ("scheduled", 0, f"mailbox paused: {line}")
    }
    assert min(s.scheduledFor for s in waiting) > utcnow() + timedelta(minutes=55)

    events = paused_events(asserting_events_worker)
    assert [(e.event, e.resource.id, e.resource.name) for e in events] == [
        ("campaign-pipeline.mailbox.paused", f"campaign-pipeline.mailbox.{mailbox_id}", ALEX),
        ("campaign-pipeline.campaign.paused", f"campaign-pipeline.campaign.{campaign_id}", NAME),
    ]
    for event in events:
        assert {k: event.payload[k] for k in ("sends", "hard_bounces", "complaints")} == {
            "sends": 50,
            "hard_bounces": 5,
            "complaints": 0,
        }
        assert (event.payload["hard_bounce_rate"], event.payload["reason"]) == (0.1, line)
        assert event.payload["thresholds"] == {
            "max_hard_bounce_rate": 0.03,
            "min_sends": 50,
            "max_complaints": 3,
            "max_complaint_rate": 0.001,
        }
    assert_clean(events)

    # The operator cleans the list and resumes both: the rest goes out an hour later, once each,
    # and the 10% of the old window does not trip the breakers again.
    smtp.reset_rules()
    with sessions.begin() as session:
        resume_mailbox(session, mailbox_id, now=utcnow())
        resume_campaign(session, campaign_id, now=utcnow())
    resumed = deliver(later_by(monkeypatch, timedelta(minutes=61)))
    assert resumed.total("sent") == 70
    assert [smtp.attempts(lead(i)) for i in range(120)] == [1] * 120
    assert statuses(sessions, campaign_id, mailbox_id) == [("active", None), ("active", None)]
    assert len(paused_events(asserting_events_worker)) == 2


def test_other_lanes_of_a_tripped_mailbox_are_refused_at_their_next_handover(
    smtp, sessions, run_settings, monkeypatch
):
    run_settings.update(smtp_max_connections=4)  # one mailbox without a gap: four lanes
    # The campaign tolerates the storm, so only the mailbox's status can stop the other lanes.
    rules = {**RULES, "protection": {"maxHardBounceRate": 0.5}}
    campaign_id, mailbox_id = seed(sessions, 120, rules=rules, smtp_port=smtp.port)
    for i in range(9, 120, 10):
        smtp.reject_rcpt(lead(i), UNKNOWN_USER.format(lead(i)))
    # The server notes each recipient that reaches it once the pause is committed.
    after_pause: list[str] = []
    on_rcpt = smtp._on_rcpt

    def noting(address: str):
        with sessions() as session:
            if session.get(Mailbox, mailbox_id).status == "paused":
                after_pause.append(address)
        return on_rcpt(address)

    monkeypatch.setattr(smtp, "_on_rcpt", noting)

    report = deliver()

    (mailbox, line), campaign = statuses(sessions, campaign_id, mailbox_id)
    assert (mailbox, campaign) == ("paused", ("active", None)) and line.startswith("hard bounces")
    assert int(line.split(" of ")[1].split()[0]) >= 50
    # Only what the three other lanes had already handed over may still arrive: each is refused
    # at its next handover.
    assert len(after_pause) <= 3
    attempted = [s for s in sends(sessions) if s.attempts]
    assert sum(smtp.attempts(lead(i)) for i in range(120)) == len(attempted)
    waiting = [s for s in sends(sessions) if not s.attempts]
    assert len(waiting) == report.total("deferred") == 120 - len(attempted) > 0
    for send in waiting:
        assert (send.status, send.statusReason) == ("scheduled", f"mailbox paused: {line}")


def test_a_campaigns_own_lines_pause_it_and_the_guard_defers_the_rest(
    smtp,
    sessions,
    asserting_events_worker,  # noqa: F811
):
    # No mailbox row: the global login sends, and only the campaign has a breaker.
    rules = {**RULES, "protection": {"minSends": 20, "maxHardBounceRate": 0.05}}
    campaign_id, _ = seed(sessions, 40, rules=rules, row=False)
    for i in (4, 19):
        smtp.reject_rcpt(lead(i), UNKNOWN_USER.format(lead(i)))

    report = deliver()

    line = "hard bounces 2 of 20 sends (10.0%) in 7 days ≥ 5%"
    assert [smtp.attempts(lead(i)) for i in range(40)] == [1] * 20 + [0] * 20
    assert statuses(sessions, campaign_id, None) == [("paused", line)]
    assert report.total("deferred") == 20
    # Each was refused at its handover by the campaign's status, then deferred with why.
    assert {(s.status, s.attempts, s.statusReason) for s in sends(sessions)[20:]} == {
        ("scheduled", 0, f"campaign paused: {line}")
    }
    (event,) = paused_events(asserting_events_worker)
    assert event.event == "campaign-pipeline.campaign.paused"
    assert event.payload["thresholds"]["min_sends"] == 20


def test_dsn_bounces_read_from_the_mailbox_pause_it_in_the_ingestion_flow(
    smtp,
    sessions,
    asserting_events_worker,  # noqa: F811
):
    with LoopbackIMAP(auth=(ALEX, IMAP_PW)) as imap:
        campaign_id, mailbox_id = seed(
            sessions, 5, sent=60, imap_port=imap.port, smtp_port=smtp.port
        )
        for i in range(3):  # 3 of 60 is 5%: over the line, with the sample complete
            dsn = DSN.replace(b"gone@lead.example", lead(i).encode())
            dsn = dsn.replace(b"Gone@Lead.Example", lead(i).encode())
            dsn = dsn.replace(b"<def456@seller.example>", f"<sent{i}@seller.example>".encode())
            dsn = dsn.replace(b"9A1B2C3D4E@mx", f"dsn{i}@mx".encode())  # its own Message-Id
            imap.add("INBOX", dsn, datetime(2026, 12, 1, 9, i, tzinfo=UTC))
        report = asyncio.run(ingest_engagement_events(source="live"))

    assert report.stopped == {"bounced": 3}
    line = "hard bounces 3 of 60 sends (5.0%) in 7 days ≥ 3%"
    assert statuses(sessions, campaign_id, mailbox_id) == [("paused", line), ("paused", line)]
    events = paused_events(asserting_events_worker)
    assert [e.event for e in events] == [
        "campaign-pipeline.mailbox.paused",
        "campaign-pipeline.campaign.paused",
    ]
    assert_clean(events)
    # The next delivery run hands nothing over: the campaign's due sends wait for a resume.
    assert deliver().total("sent") == 0 and smtp.messages == []
    assert {s.status for s in sends(sessions)[60:]} == {"scheduled"}


def test_complaints_posted_to_the_webhook_pause_the_mailbox_before_the_next_handover(
    smtp,
    sessions,
    asserting_events_worker,  # noqa: F811
):
    # The campaign tolerates more complaints than the mailbox: only the mailbox trips.
    rules = {**RULES, "protection": {"maxComplaints": 10}}
    campaign_id, mailbox_id = seed(sessions, 5, sent=10, rules=rules, smtp_port=smtp.port)
    with sessions() as session:
        complained = session.scalars(
            select(EmailSend.id).where(EmailSend.status == "sent").order_by(EmailSend.toEmail)
        ).all()[:3]
    secrets = WebhookSecrets(postmark_username="hooks", postmark_password=SecretStr("hook-pw"))
    with serving(create_app(sessions, b"a test secret of sixteen+ bytes", secrets)) as client:
        for n, send_id in enumerate(complained):
            complaint = {
                "RecordType": "SpamComplaint",
                "Type": "SpamComplaint",
                "ID": 4323372036854775800 + n,
                "Metadata": {"send_id": send_id},
                "BouncedAt": "2026-12-01T09:00:00Z",
            }
            answer = client.post(
                "/webhooks/postmark",
                content=json.dumps(complaint),
                headers={"Content-Type": "application/json"},
                auth=("hooks", "hook-pw"),
            )
            assert answer.status_code == 200, answer.text

    report = deliver()

    line = "complaints 3 of 10 sends (30.0%) in 7 days ≥ max(3, 0.1%)"
    assert statuses(sessions, campaign_id, mailbox_id) == [("paused", line), ("active", None)]
    assert report.total("sent") == 0 and smtp.messages == []
    assert {(s.status, s.statusReason) for s in sends(sessions)[10:]} == {
        ("scheduled", f"mailbox paused: {line}")
    }
    (event,) = paused_events(asserting_events_worker)
    assert (event.event, event.payload["complaints"]) == ("campaign-pipeline.mailbox.paused", 3)


def test_the_readmes_automation_is_accepted_by_the_prefect_server(run_settings):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(# prefect automation create .*?)```", readme, re.DOTALL)
    notify = SlackWebhook(url="https://hooks.slack.example/services/T0/B0/x")
    block_id = notify.save("breaker-paused", overwrite=True)
    document = yaml.safe_load(block.replace("00000000-0000-0000-0000-000000000000", str(block_id)))
    automation = AutomationCore.model_validate(document)
    assert automation.trigger.expect == {
        "campaign-pipeline.mailbox.paused",
        "campaign-pipeline.campaign.paused",
    }

    async def create() -> None:
        async with get_client() as client:
            created = await client.read_automation(await client.create_automation(automation))
            assert created is not None
            (action,) = created.actions
            assert isinstance(action, SendNotification) and action.block_document_id == block_id

    asyncio.run(create())
