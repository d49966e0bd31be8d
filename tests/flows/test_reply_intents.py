"""Reply intents through `ingest-engagement-events`: the corpus through the rules and through
the fake LLM, and each intent's action, exactly once however often the replies are ingested.
(Delivery reading a reply first: tests/flows/test_replies_before_delivery.py.)

Real PostgreSQL, the Prefect harness (and its event store), the fake OpenAI server over HTTP.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.campaigns.schedule import next_window_opening
from core.campaigns.sending_rules import parse_sending_rules
from core.engagement.report import IngestColumn
from db.base import utcnow
from db.models import (
    CampaignLead,
    EmailSend,
    EngagementEvent,
    Lead,
    ReplyClassification,
    Suppression,
    Workspace,
)
from flows.ingest_engagement_events import ingest_engagement_events
from tasks.replies import INTERESTED_EVENT
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.reply_corpus import CorpusReply, corpus_responder, load_corpus
from tests.support.run_records import emitted_events, run_logs, run_with_artifacts

pytestmark = pytest.mark.flows

CORPUS = load_corpus()
KEY = "sk-test-reply-intents"
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
RULES = {
    "timezone": "UTC",
    "window": {"start": "09:00", "end": "17:00", "days": WEEKDAYS},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromName": "Sam",
    "fromEmail": "sam@seller.example",
}


@pytest.fixture
def llm(run_settings):
    with FakeOpenAI(responder=corpus_responder(CORPUS)) as server:
        run_settings.update(openai_api_key=KEY, openai_base_url=server.base_url)
        yield server


def _sender(reply: CorpusReply) -> str:
    head = reply.raw.split(b"\n\n", 1)[0].decode()
    line = next(row for row in head.splitlines() if row.startswith("From:"))
    return line.partition("<")[2].rstrip(">").strip()


def seed(sessions, replies: list[CorpusReply], *, rules: dict | None = None) -> dict[str, str]:
    """Per reply, a lead whose step 1 (the email it answers) was sent and whose step 2 is
    pending for tomorrow; returns the enrolment id of each reply's file."""
    enrolments = {}
    tomorrow = utcnow() + timedelta(days=1)
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=rules or RULES)
        for reply in replies:
            lead = factories.lead(session, ws, email=_sender(reply), firstName="Pat")
            enrolment = factories.enrolment(
                session, camp, lead, currentStepOrder=3, due=tomorrow + timedelta(days=3)
            )
            first = factories.scheduled_send(
                session, camp, lead, status="sent", providerMessageId=reply.message_id
            )
            first.sentAt = first.attemptedAt = datetime(2026, 11, 30, 9, tzinfo=UTC)
            factories.scheduled_send(session, camp, lead, step=2, scheduled_for=tomorrow)
            enrolments[reply.file] = enrolment.id
    return enrolments


def maildir(tmp_path: Path, messages: dict[str, bytes]) -> Path:
    folder = tmp_path / "inbox"
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, raw in messages.items():
        (folder / "new" / name).write_bytes(raw)
    return folder


def ingest(folder: Path):
    return asyncio.run(
        run_with_artifacts(ingest_engagement_events, source="mailbox", path=str(folder))
    )


def classification_of(session, enrolment_id: str) -> ReplyClassification:
    enrolment = session.get(CampaignLead, enrolment_id)
    return session.scalars(
        select(ReplyClassification)
        .join(EngagementEvent, EngagementEvent.id == ReplyClassification.engagementEventId)
        .join(EmailSend, EmailSend.id == EngagementEvent.emailSendId)
        .where(EmailSend.campaignId == enrolment.campaignId, EmailSend.leadId == enrolment.leadId)
    ).one()


def follow_up(session, enrolment_id: str) -> EmailSend:
    enrolment = session.get(CampaignLead, enrolment_id)
    return session.scalars(
        select(EmailSend).where(
            EmailSend.campaignId == enrolment.campaignId,
            EmailSend.leadId == enrolment.leadId,
            EmailSend.providerMessageId.is_(None),
        )
    ).one()


def counts(sessions) -> dict[str, int]:
    with sessions() as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (Lead, CampaignLead, EngagementEvent, ReplyClassification, Suppression)
        }


def schedules(sessions) -> dict[str, tuple]:
    with sessions() as session:
        sends = session.execute(select(EmailSend.id, EmailSend.status, EmailSend.scheduledFor))
        leads = session.execute(select(CampaignLead.id, CampaignLead.nextScheduledDate))
        return {row[0]: tuple(row[1:]) for row in [*sends, *leads]}


def _check_action(session, reply: CorpusReply, enrolment_id: str, action: str, stop: str):
    enrolment = session.get(CampaignLead, enrolment_id)
    pending = follow_up(session, enrolment_id)
    if action in ("stopped", "referred"):
        assert (enrolment.status, enrolment.stopReason) == ("replied", stop), reply.file
        assert pending.status == "cancelled", reply.file
    elif action == "unsubscribed":
        assert enrolment.status == "unsubscribed", reply.file
        assert pending.status == "cancelled", reply.file
    elif action == "rescheduled":
        assert enrolment.status == "active", reply.file
        assert pending.status == "scheduled", reply.file
        assert (pending.statusReason or "").startswith("reply: "), reply.file
    else:
        assert enrolment.status == "active" and pending.statusReason is None, reply.file


def test_the_corpus_through_the_rules_acts_once(run_settings, sessions, tmp_path):
    enrolments = seed(sessions, CORPUS)
    folder = maildir(tmp_path, {reply.file: reply.raw for reply in CORPUS})
    report, artifacts, _ = ingest(folder)
    assert report.total(IngestColumn.new) == len(CORPUS)
    assert sum(report.intents.values()) == len(CORPUS)
    with sessions() as session:
        for reply in CORPUS:
            row = classification_of(session, enrolments[reply.file])
            assert (row.intent, row.method) == (reply.rules["intent"], "rules"), reply.file
            assert row.returnDate == reply.rules.get("return_date"), reply.file
            assert row.action == reply.rules_action, reply.file
            assert row.model is None and row.costUsd is None
            _check_action(session, reply, enrolments[reply.file], row.action, "replied")
    summary = artifacts["ingest-engagement-events-summary"].data
    assert "## New replies, by intent" in summary and "- out_of_office: 10" in summary

    before, moved = counts(sessions), schedules(sessions)
    again, _, _ = ingest(folder)
    assert again.total(IngestColumn.new) == 0
    assert again.total(IngestColumn.duplicate) == len(CORPUS)
    assert not again.intents and not again.stopped
    assert counts(sessions) == before and schedules(sessions) == moved


def test_the_corpus_through_the_llm_acts_once(run_settings, sessions, tmp_path, llm):
    enrolments = seed(sessions, CORPUS)
    folder = maildir(tmp_path, {reply.file: reply.raw for reply in CORPUS})
    report, artifacts, run_id = ingest(folder)
    assert llm.stats().requests == len(CORPUS)
    assert report.referred == 3
    # What the replies say stays out of the run's records: no text, no address.
    records = [log.message for log in asyncio.run(run_logs(run_id))]
    records += [str(artifact.data) for artifact in artifacts.values()]
    for reply in CORPUS:
        assert not any(reply.match in record for record in records), reply.file
    assert not any("@" in record for record in records)
    with sessions() as session:
        for reply in CORPUS:
            row = classification_of(session, enrolments[reply.file])
            answer = reply.answer()
            assert (row.intent, row.method) == (answer["intent"], "llm"), reply.file
            assert row.confidence == answer["confidence"] and row.summary == answer["summary"]
            assert row.returnDate == reply.llm.get("return_date"), reply.file
            assert row.action == reply.action, reply.file
            assert row.model and row.promptVersion and row.inputHash and row.costUsd > 0
            assert row.promptTokens > 0 and row.completionTokens > 0
            stop = answer["intent"] if answer["confidence"] >= 0.6 else "replied"
            stop = "referral" if row.action == "referred" else stop
            _check_action(session, reply, enrolments[reply.file], row.action, stop)
        referred = session.scalars(
            select(Lead).where(Lead.customFields["referredBy"].is_not(None))
        ).all()
        assert {lead.email for lead in referred} == {
            "maria.lopez@alpine.example",
            "claire.martin@rennes-sante.example",
            "pedro.gomez@zaragoza-energia.example",
        }
    interested = {
        enrolments[r.file]
        for r in CORPUS
        if r.llm["intent"] in ("interested", "meeting_request") and r.answer()["confidence"] >= 0.6
    }
    with sessions() as session:
        lead_ids = {session.get(CampaignLead, e).leadId for e in enrolments.values()}
        wanted = {session.get(CampaignLead, e).leadId for e in interested}
    resources = {f"campaign-pipeline.lead.{lead}" for lead in lead_ids}
    events = asyncio.run(
        emitted_events(INTERESTED_EVENT, resource_ids=resources, expected=len(wanted))
    )
    assert {event["payload"]["lead_id"] for event in events} == wanted
    assert all("@" not in event["payload"]["summary"] for event in events)

    before, moved = counts(sessions), schedules(sessions)
    again, _, _ = ingest(folder)
    assert again.total(IngestColumn.duplicate) == len(CORPUS) and not again.intents
    assert llm.stats().requests == len(CORPUS)  # nothing new: nothing sent to the LLM
    assert counts(sessions) == before and schedules(sessions) == moved
    later = asyncio.run(
        emitted_events(INTERESTED_EVENT, resource_ids=resources, expected=len(wanted) + 1, within=3)
    )
    assert len(later) == len(wanted)


def _reply(sender: str, in_reply_to: str, body: str, *, at: datetime, auto: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "sam@seller.example"
    message["Subject"] = "Re: Step 1 for Pat"
    message["Date"] = format_datetime(at)
    message["Message-ID"] = f"<{abs(hash((sender, body)))}@lead.example>"
    message["In-Reply-To"] = in_reply_to
    if auto:
        message["Auto-Submitted"] = "auto-replied"
    message.set_content(body)
    return bytes(message)


def _one_lead(sessions, address: str, *, rules: dict | None = None) -> tuple[str, str, str]:
    """A lead whose step 1 went out as <step1@seller.example> and whose step 2 waits for
    tomorrow's window; (enrolment id, follow-up send id, Message-ID answered)."""
    [reply] = [r for r in CORPUS if r.file.startswith("01-")]
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=rules or RULES)
        lead = factories.lead(session, ws, email=address, firstName="Pat", companyName="Lead Co")
        tomorrow = utcnow() + timedelta(days=1)
        enrolment = factories.enrolment(
            session, camp, lead, currentStepOrder=3, due=tomorrow + timedelta(days=3)
        )
        first = factories.scheduled_send(
            session, camp, lead, status="sent", providerMessageId=reply.message_id
        )
        first.sentAt = first.attemptedAt = utcnow() - timedelta(days=2)
        second = factories.scheduled_send(session, camp, lead, step=2, scheduled_for=tomorrow)
        return enrolment.id, second.id, reply.message_id


def test_out_of_office_moves_the_follow_up_past_the_return_date(run_settings, sessions, tmp_path):
    enrolment_id, send_id, answered = _one_lead(sessions, "pat@lead.example")
    with sessions() as session:
        before = session.get(CampaignLead, enrolment_id).nextScheduledDate
        pending = session.get(EmailSend, send_id).scheduledFor
    back = (utcnow() + timedelta(days=10)).date()
    body = f"I am out of the office until {back:%d %B %Y} with limited access to email."
    raw = _reply("pat@lead.example", answered, body, at=utcnow(), auto=True)
    report, _, _ = ingest(maildir(tmp_path, {"ooo": raw}))
    assert report.intents == {"out_of_office": 1} and report.reply_actions == {"rescheduled": 1}
    # The window's first moment on a working day after the return date.
    day_after = datetime.combine(back + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    expected = next_window_opening(day_after, parse_sending_rules(RULES).window, UTC)
    with sessions() as session:
        enrolment = session.get(CampaignLead, enrolment_id)
        send = session.get(EmailSend, send_id)
        row = classification_of(session, enrolment_id)
        assert enrolment.status == "active" and enrolment.stopReason is None
        assert send.status == "scheduled" and send.scheduledFor == expected
        # The next step keeps its delay after the moved follow-up.
        assert enrolment.nextScheduledDate == before + (expected - pending)
        assert (row.returnDate, row.resumeAt, row.action) == (back, expected, "rescheduled")
    again, _, _ = ingest(maildir(tmp_path, {"ooo": raw}))
    assert again.total(IngestColumn.duplicate) == 1
    with sessions() as session:
        assert session.get(EmailSend, send_id).scheduledFor == expected
        assert session.scalar(select(func.count()).select_from(ReplyClassification)) == 1


def test_not_now_without_a_date_waits_the_default_pause(run_settings, sessions, tmp_path, llm):
    run_settings.update(reply_default_pause_days=14)
    enrolment_id, send_id, answered = _one_lead(sessions, "pat@lead.example")
    started = utcnow()
    raw = _reply("pat@lead.example", answered, "Not now please [intent:not_now]", at=started)
    ingest(maildir(tmp_path, {"later": raw}))
    with sessions() as session:
        send = session.get(EmailSend, send_id)
        assert session.get(CampaignLead, enrolment_id).status == "active"
        earliest = next_window_opening(
            started + timedelta(days=14), parse_sending_rules(RULES).window, UTC
        )
        assert earliest <= send.scheduledFor <= earliest + timedelta(days=3)
        assert classification_of(session, enrolment_id).returnDate is None


def test_a_referral_enrols_the_colleague_once(run_settings, sessions, tmp_path, llm):
    [reply] = [r for r in CORPUS if r.file.startswith("10-")]
    enrolments = seed(sessions, [reply])
    folder = maildir(tmp_path, {reply.file: reply.raw})
    report, _, _ = ingest(folder)
    assert report.referred == 1 and report.stopped == {"referral": 1}
    with sessions() as session:
        referrer = session.get(CampaignLead, enrolments[reply.file])
        maria = session.scalars(
            select(Lead).where(Lead.email == "maria.lopez@alpine.example")
        ).one()
        enrolled = session.scalars(
            select(CampaignLead).where(CampaignLead.leadId == maria.id)
        ).one()
        row = classification_of(session, enrolments[reply.file])
        assert (referrer.status, referrer.stopReason) == ("replied", "referral")
        assert (enrolled.campaignId, enrolled.currentStepOrder) == (referrer.campaignId, 1)
        assert enrolled.status == "active" and enrolled.nextScheduledDate <= utcnow()
        assert (maria.firstName, maria.lastName) == ("Maria", "Lopez")
        assert maria.customFields["referredBy"] == "Pat"
        assert maria.customFields["referredByLeadId"] == referrer.leadId
        assert (row.referralLeadId, row.actionDetail) == (maria.id, "referral enrolled at step 1")
    before = counts(sessions)
    ingest(folder)
    assert counts(sessions) == before


def test_a_referral_to_a_known_or_suppressed_address_enrols_nobody(
    run_settings, sessions, tmp_path, llm
):
    replies = [r for r in CORPUS if r.file.startswith(("10-", "22-"))]
    enrolments = seed(sessions, replies)
    with sessions.begin() as session:
        referrer = session.get(CampaignLead, enrolments[replies[0].file])
        workspace = session.scalars(
            select(Lead.workspaceId).where(Lead.id == referrer.leadId)
        ).one()
        session.add(Lead(workspaceId=workspace, email="MARIA.LOPEZ@alpine.example"))
        session.add(
            Suppression(
                workspaceId=workspace,
                email="claire.martin@rennes-sante.example",
                reason="unsubscribed",
            )
        )
    leads = counts(sessions)["Lead"]
    report, _, _ = ingest(maildir(tmp_path, {r.file: r.raw for r in replies}))
    assert report.referred == 0 and report.stopped == {"referral": 2}
    with sessions() as session:
        details = {classification_of(session, enrolments[r.file]).actionDetail for r in replies}
    assert details == {
        "referral not enrolled: the address is already a lead of the workspace",
        "referral not enrolled: the address is suppressed",
    }
    assert counts(sessions)["Lead"] == leads


def test_an_unsubscribe_reply_takes_the_links_operation(run_settings, sessions, tmp_path):
    [reply] = [r for r in CORPUS if r.file.startswith("11-")]
    enrolments = seed(sessions, [reply])
    with sessions.begin() as session:
        # The same person in a second campaign of the workspace stops too, as with the link.
        lead = session.get(Lead, session.get(CampaignLead, enrolments[reply.file]).leadId)
        other = factories.campaign(
            session, session.get(Workspace, lead.workspaceId), sendingRules=RULES
        )
        factories.enrolment(session, other, lead)
    report, _, _ = ingest(maildir(tmp_path, {reply.file: reply.raw}))
    assert report.stopped == {"unsubscribed": 2} and report.reply_actions == {"unsubscribed": 1}
    with sessions() as session:
        assert {e.status for e in session.scalars(select(CampaignLead))} == {"unsubscribed"}
        [suppressed] = session.scalars(select(Suppression)).all()
        assert (suppressed.email, suppressed.reason) == (_sender(reply), "unsubscribed")
        sent = session.scalars(
            select(EmailSend).where(EmailSend.providerMessageId == reply.message_id)
        ).one()
        event = session.get(EngagementEvent, f"unsubscribe:{sent.id}")
        assert event is not None and event.type == "unsubscribe"
        assert event.eventMetadata == {"source": "reply"}
        assert follow_up(session, enrolments[reply.file]).statusReason == "unsubscribed"
