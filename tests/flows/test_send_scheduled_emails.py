"""`send-scheduled-emails` end to end: Prefect harness, real PostgreSQL, real SMTP on loopback."""

import asyncio
import itertools
import threading
from contextvars import copy_context
from datetime import timedelta
from email.utils import getaddresses
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from core.campaigns.schedule import next_window_opening
from core.campaigns.sending_rules import parse_sending_rules
from core.delivery.plan import next_local_day
from db.base import utcnow
from db.models import (
    Campaign,
    CampaignLead,
    DeliveryCounter,
    EmailSend,
    EngagementEvent,
    Suppression,
)
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.support.run_records import run_with_artifacts

pytestmark = pytest.mark.flows

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromName": "Alex",
    "fromEmail": "alex@seller.example",
    "replyTo": "replies@seller.example",
}


def seed(sessions, n: int, *, rules: dict | None = None, steps: int = 3, **send_fields):
    """A campaign with n leads, each with a due step-1 send; returns (campaign id, send ids)."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=steps, sendingRules=rules or RULES)
        ids = []
        for i in range(n):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            send = factories.scheduled_send(
                session,
                camp,
                lead,
                subject=f"Idea for lead {i}",
                scheduled_for=utcnow() - timedelta(minutes=1),
                **send_fields,
            )
            ids.append(send.id)
        return camp.id, ids


def run(**params):
    return asyncio.run(send_scheduled_emails(**params))


def sends(sessions) -> dict[str, EmailSend]:
    with sessions() as session:
        return {s.id: s for s in session.scalars(select(EmailSend))}


def test_due_sends_are_delivered_once_with_their_headers(smtp, sessions):
    _campaign_id, ids = seed(sessions, 3)
    report = run(batch_size=2)
    assert report.total("sent") == 3
    received = smtp.wait_for(3)
    rows = sends(sessions)
    for send_id in ids:
        row = rows[send_id]
        assert row.status == "sent" and row.sentAt is not None and row.attempts == 1
        assert row.mailbox == "alex@seller.example"
        (message,) = [m for m in received if m.message["Message-ID"] == row.providerMessageId]
        assert message.rcpt_tos == (row.toEmail,)
        assert message.mail_from == "alex@seller.example"
        headers = message.message
        assert getaddresses(headers.get_all("To")) == [("Sarah", row.toEmail)]
        assert headers["From"] == "Alex <alex@seller.example>"
        assert headers["Reply-To"] == "replies@seller.example"
        assert headers["Subject"].startswith("Idea for lead")
        assert headers["In-Reply-To"] is None
        unsubscribe = headers["List-Unsubscribe"]
        assert "<https://links.seller.example/unsubscribe/" in unsubscribe
        assert "<mailto:alex@seller.example?subject=unsubscribe" in unsubscribe
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {m.rcpt_tos for m in received} == {(f"lead{i}@buyer.example",) for i in range(3)}
    assert run().total("sent") == 0  # nothing is ever delivered twice
    assert len(smtp.messages) == 3


def test_follow_ups_thread_on_the_first_message_from_the_same_mailbox(smtp, sessions):
    rules = {key: value for key, value in RULES.items() if key != "fromEmail"}
    rules["mailboxes"] = [{"email": "a@seller.example"}, {"email": "b@seller.example"}]
    campaign_id, ids = seed(sessions, 4, rules=rules)
    run()
    first = sends(sessions)
    with sessions.begin() as session:
        camp = session.get(Campaign, campaign_id)
        for send_id in ids:
            lead = session.get(factories.Lead, first[send_id].leadId)
            factories.scheduled_send(
                session, camp, lead, step=2, subject="A different subject", body="Following up"
            )
    run()
    received = smtp.wait_for(8)
    assert {m.mail_from for m in received[:4]} == {"a@seller.example", "b@seller.example"}
    for send_id in ids:
        root = first[send_id]
        (follow_up,) = [m.message for m in received[4:] if m.rcpt_tos == (root.toEmail,)]
        assert follow_up["In-Reply-To"] == root.providerMessageId
        assert follow_up["References"] == root.providerMessageId
        assert follow_up["Subject"] == f"Re: Idea for lead {ids.index(send_id)}"
        assert follow_up["From"].endswith(f"<{root.mailbox}>")


def test_threading_can_be_turned_off(smtp, sessions):
    campaign_id, ids = seed(sessions, 1, rules=RULES | {"threadFollowUps": False})
    run()
    with sessions.begin() as session:
        camp = session.get(Campaign, campaign_id)
        lead = session.get(factories.Lead, sends(sessions)[ids[0]].leadId)
        factories.scheduled_send(session, camp, lead, step=2, subject="Second note")
    run()
    follow_up = smtp.wait_for(2)[1].message
    assert follow_up["In-Reply-To"] is None and follow_up["Subject"] == "Second note"


def test_a_stop_between_generation_and_send_cancels_the_send(smtp, sessions):
    campaign_id, ids = seed(sessions, 4)
    rows = sends(sessions)
    with sessions.begin() as session:
        replied, unsubscribed, suppressed = (rows[i] for i in ids[:3])
        session.execute(
            update(CampaignLead)
            .where(CampaignLead.leadId == replied.leadId)
            .values(status="replied")
        )
        session.execute(
            update(CampaignLead)
            .where(CampaignLead.leadId == unsubscribed.leadId)
            .values(status="unsubscribed")
        )
        ws = session.get(Campaign, campaign_id).workspaceId
        session.add(
            Suppression(workspaceId=ws, email=suppressed.toEmail.upper(), reason="complaint")
        )
    report = run()
    after = sends(sessions)
    assert report.total("cancelled") == 3 and report.total("sent") == 1
    assert after[ids[0]].status == "cancelled" and after[ids[0]].statusReason == "lead replied"
    assert after[ids[1]].statusReason == "lead unsubscribed"
    assert "suppression" in after[ids[2]].statusReason
    assert [m.rcpt_tos for m in smtp.messages] == [(after[ids[3]].toEmail,)]


def test_the_caps_count_only_what_was_handed_over(smtp, sessions, run_settings):
    """A lane reserves its sends' room in the campaign's cap before its first handover and
    gives back what it did not hand over: here the send of a lead who replied mid-lane."""
    run_settings.update(smtp_max_connections="1")  # one lane for the four sends
    _campaign_id, ids = seed(sessions, 4)
    late = sends(sessions)[ids[-1]]

    def reply_during_the_first_message(_raw: bytes) -> None:
        smtp.on_accept = None
        with sessions.begin() as session:
            session.execute(
                update(CampaignLead)
                .where(CampaignLead.leadId == late.leadId)
                .values(status="replied")
            )

    smtp.on_accept = reply_during_the_first_message
    report = run()
    assert report.total("sent") == 3 and report.total("cancelled") == 1
    assert sends(sessions)[ids[-1]].status == "cancelled"
    with sessions() as session:
        used = {c.scope: c.used for c in session.scalars(select(DeliveryCounter))}
    assert used == {"campaign": 3, "mailbox": 3}


def test_an_ended_campaign_cancels_and_a_paused_one_holds(smtp, sessions):
    ended, ended_ids = seed(sessions, 1)
    paused, paused_ids = seed(sessions, 1)
    with sessions.begin() as session:
        session.get(Campaign, ended).status = "completed"
        session.get(Campaign, paused).status = "paused"
    run()
    after = sends(sessions)
    assert after[ended_ids[0]].status == "cancelled"
    assert after[ended_ids[0]].statusReason == "campaign completed"
    assert after[paused_ids[0]].status == "scheduled" and after[paused_ids[0]].claimToken is None
    assert smtp.messages == []


def test_a_4xx_is_retried_later_and_a_5xx_bounces_without_stopping_the_batch(smtp, sessions):
    campaign_id, ids = seed(sessions, 5)
    rows = sends(sessions)
    busy, gone = rows[ids[1]].toEmail, rows[ids[3]].toEmail
    smtp.reject_rcpt(busy, "450 4.2.1 Mailbox busy")
    smtp.reject_rcpt(gone, "550 5.1.1 User unknown")
    with sessions.begin() as session:  # the bounced lead in a second campaign of the workspace
        other = factories.campaign(
            session,
            session.get(factories.Workspace, session.get(Campaign, campaign_id).workspaceId),
            sendingRules=RULES,
        )
        lead = session.get(factories.Lead, rows[ids[3]].leadId)
        factories.enrolment(session, other, lead, currentStepOrder=2)
        later = factories.scheduled_send(
            session, other, lead, scheduled_for=utcnow() + timedelta(days=2)
        ).id
    started = utcnow()
    report = run()
    after = sends(sessions)
    assert report.total("sent") == 3 and report.total("retried") == 1
    assert report.total("bounced") == 1
    retry = after[ids[1]]
    assert retry.status == "scheduled" and retry.attempts == 1 and retry.attemptedAt is None
    assert started + timedelta(minutes=3) < retry.scheduledFor < utcnow() + timedelta(minutes=7)
    assert "450 4.2.1 Mailbox busy" in retry.statusReason
    bounced = after[ids[3]]
    assert bounced.status == "failed" and "550 5.1.1" in bounced.statusReason
    assert gone not in bounced.statusReason
    assert after[later].status == "cancelled"
    with sessions() as session:
        events = session.scalars(select(EngagementEvent)).all()
        statuses = set(
            session.scalars(select(CampaignLead.status).where(CampaignLead.leadId == lead.id))
        )
        suppressed = session.scalars(select(Suppression.email)).all()
    assert [(e.type, e.emailSendId) for e in events] == [("bounce", bounced.id)]
    assert statuses == {"bounced"} and suppressed == [gone]
    for i in (0, 2, 4):
        assert smtp.deliveries(rows[ids[i]].toEmail) == 1
    assert smtp.deliveries(gone) == 0 and smtp.attempts(gone) == 1


def test_4xx_attempts_are_bounded(smtp, sessions, run_settings):
    run_settings.update(max_delivery_attempts="2")
    _campaign_id, ids = seed(sessions, 1)
    smtp.reject_rcpt("*", "451 4.7.1 Greylisted")
    run()
    with sessions.begin() as session:  # the backoff has passed
        session.get(EmailSend, ids[0]).scheduledFor = utcnow() - timedelta(seconds=1)
    report = run()
    row = sends(sessions)[ids[0]]
    assert report.total("failed") == 1
    assert row.status == "failed" and row.attempts == 2
    assert row.statusReason.startswith("gave up after 2 attempts: 451 4.7.1")
    assert smtp.attempts("lead0@buyer.example") == 2


def test_daily_caps_defer_to_the_next_local_day(smtp, sessions):
    rules = RULES | {"timezone": "Asia/Tokyo", "dailyLimit": 2}
    _campaign_id, _ids = seed(sessions, 5, rules=rules)
    before = utcnow()
    report = run()
    after = sends(sessions)
    assert report.total("sent") == 2 and report.total("deferred") == 3
    tomorrow = next_local_day(before, ZoneInfo("Asia/Tokyo"))  # the window opens at midnight
    for row in after.values():
        if row.status == "scheduled":
            assert row.statusReason == "campaign daily limit (2) reached"
            assert row.scheduledFor == tomorrow
    assert run().total("sent") == 0  # still capped; the deferred ones are not due yet


def test_the_mailbox_cap_and_gap(smtp, sessions):
    rules = RULES | {"mailboxDailyLimit": 3, "minGapSeconds": 1}
    seed(sessions, 4, rules=rules)
    report = run(max_wait_seconds=10)
    assert report.total("sent") == 3 and report.total("deferred") == 1
    times = sorted(m.received_at for m in smtp.messages)
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))


def test_a_short_wait_defers_what_the_gap_pushes_past_it(smtp, sessions):
    seed(sessions, 3, rules=RULES | {"minGapSeconds": 120})
    report = run(max_wait_seconds=0)
    after = sends(sessions)
    assert report.total("sent") == 1 and report.total("deferred") == 2
    waiting = sorted(r.scheduledFor for r in after.values() if r.status == "scheduled")
    sent_at = next(r.attemptedAt for r in after.values() if r.status == "sent")
    assert waiting[0] >= sent_at + timedelta(seconds=119)
    assert waiting[1] >= waiting[0] + timedelta(seconds=119)
    assert {r.statusReason for r in after.values() if r.status == "scheduled"} == {
        "mailbox gap (minGapSeconds)"
    }


def test_a_closed_window_defers_to_its_next_opening(smtp, sessions):
    today = utcnow().strftime("%a").lower()
    days = [d for d in EVERY_DAY if d != today]
    rules = RULES | {"timezone": "America/New_York", "window": {"days": days}}
    _campaign_id, ids = seed(sessions, 1, rules=rules)
    before = utcnow()
    report = run()
    row = sends(sessions)[ids[0]]
    assert report.total("deferred") == 1 and smtp.messages == []
    expected = next_window_opening(
        before, parse_sending_rules(rules).window, ZoneInfo("America/New_York")
    )
    assert row.status == "scheduled" and row.scheduledFor == expected
    assert row.statusReason == "outside the sending window"


def test_invalid_rules_pause_only_that_campaign(smtp, sessions):
    _bad, bad_ids = seed(sessions, 2, rules=RULES | {"window": {"start": "18:00", "end": "09:00"}})
    _good, good_ids = seed(sessions, 2)
    report = run()
    after = sends(sessions)
    assert report.total("sent") == 2
    for send_id in bad_ids:
        assert after[send_id].status == "scheduled" and after[send_id].claimToken is None
        assert "sendingRules invalid: window" in after[send_id].statusReason
    assert {after[i].status for i in good_ids} == {"sent"}


def test_a_dry_run_sends_and_writes_nothing(smtp, sessions):
    seed(sessions, 3)
    before = sends(sessions)
    report = run(dry_run=True)
    assert report.total("sent") == 0 and smtp.messages == []
    after = sends(sessions)
    assert {k: (v.status, v.claimToken) for k, v in after.items()} == {
        k: (v.status, v.claimToken) for k, v in before.items()
    }


def test_a_dropped_connection_after_data_is_unknown_and_never_resent(smtp, sessions):
    _campaign_id, ids = seed(sessions, 3)
    rows = sends(sessions)
    flaky = rows[ids[1]].toEmail
    smtp.accept_then_drop(flaky)
    report = run()
    after = sends(sessions)
    assert after[ids[1]].status == "unknown"
    assert "no final reply" in after[ids[1]].statusReason
    assert [u.send_id for u in report.unknown] == [ids[1]]
    assert {after[i].status for i in (ids[0], ids[2])} == {"sent"}
    smtp.reset_rules()
    run()
    assert smtp.deliveries(flaky) == 1
    assert sends(sessions)[ids[1]].status == "unknown"


def test_a_vanished_handover_becomes_unknown_and_is_listed(smtp, sessions):
    _campaign_id, ids = seed(sessions, 2)
    with sessions.begin() as session:
        row = session.get(EmailSend, ids[0])
        row.status, row.claimToken, row.claimedBy = "sending", "dead", "flow-run/gone"
        row.claimedUntil = utcnow() - timedelta(seconds=1)
    report = run()
    row = sends(sessions)[ids[0]]
    assert row.status == "unknown" and "flow-run/gone vanished" in row.statusReason
    assert [u.send_id for u in report.unknown] == [ids[0]]
    assert report.total("sent") == 1


def test_two_overlapping_runs_hand_each_send_over_once(smtp, sessions):
    seed(sessions, 60, rules=RULES | {"dailyLimit": 1000, "mailboxDailyLimit": 1000})
    barrier = threading.Barrier(2)
    reports = []

    def one() -> None:
        barrier.wait()
        reports.append(run(batch_size=7))

    # Each thread runs in a copy of this context: the test's run settings and result storage.
    threads = [threading.Thread(target=copy_context().run, args=(one,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.total("sent") for r in reports) == 60
    assert all(smtp.deliveries(f"lead{i}@buyer.example") == 1 for i in range(60))
    assert {s.status for s in sends(sessions).values()} == {"sent"}


def test_a_header_injection_in_lead_data_or_llm_output_adds_no_recipient(smtp, sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES)
        lead = factories.lead(
            session, ws, email="victim@buyer.example", firstName="Eve\r\nBcc: spy@evil.example"
        )
        factories.enrolment(session, camp, lead, currentStepOrder=2)
        factories.scheduled_send(
            session,
            camp,
            lead,
            subject="Hi\r\nCc: spy@evil.example =?UTF-8?Q?=0A?=Bcc: spy2@evil.example",
            body="Body\r\nBcc: spy3@evil.example\r\n.\r\nMAIL FROM:<x@evil.example>",
        )
    run()
    (message,) = smtp.wait_for(1)
    assert message.rcpt_tos == ("victim@buyer.example",)
    headers = message.message
    assert headers["Bcc"] is None and headers["Cc"] is None
    assert [addr for _, addr in getaddresses(headers.get_all("To"))] == ["victim@buyer.example"]
    assert set(headers.keys()) == {
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
    }
    assert headers["To"].addresses[0].display_name == "Eve Bcc: spy@evil.example"


def test_the_run_publishes_its_table_without_addresses(smtp, sessions):
    seed(sessions, 2)
    smtp.reject_rcpt("lead1@buyer.example", "550 5.1.1 <lead1@buyer.example> unknown")

    _, by_key, _ = asyncio.run(run_with_artifacts(send_scheduled_emails))
    assert {"send-scheduled-emails", "send-scheduled-emails-unknown"} <= set(by_key)
    table = str(by_key["send-scheduled-emails"].data)
    assert "bounced: 550 5.1.1" in table and "@buyer.example" not in table


def test_counts_are_per_campaign_and_mailbox(smtp, sessions):
    first, _ = seed(sessions, 2)
    second, _ = seed(sessions, 1, rules=RULES | {"fromEmail": "sam@seller.example"})
    table = {(r["campaign_id"], r["mailbox"]): r for r in run().table()}
    assert table[(first, "alex@seller.example")]["sent"] == 2
    assert table[(second, "sam@seller.example")]["sent"] == 1
