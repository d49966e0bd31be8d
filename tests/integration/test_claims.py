"""Claims: exclusive, bounded, leased; writes fenced by the claim token."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text

from core.generation.generate import Hold, MessageContent, MessageWrite
from db.base import new_id
from db.models import CampaignLead, EmailSend, GeneratedMessage
from db.queries.claims import claim_due_leads, preview_due_leads
from db.queries.generation import INSERT_MESSAGES, INSERT_SENDS, hold_leads, record_messages
from db.queries.messages import CONTENT_COLUMNS
from tests import factories

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


def seed(sessions, n: int, *, due: datetime = NOW - timedelta(minutes=1), steps: int = 2):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=steps)
        for i in range(n):
            factories.enrolment(
                session, camp, factories.lead(session, ws, email=f"l{i}@x.io"), due=due
            )
        return camp.id


def claim(sessions, limit: int, now: datetime = NOW, worker: str = "w1", **kwargs):
    with sessions.begin() as session:
        return claim_due_leads(
            session, as_of=now, now=now, limit=limit, worker=worker, lease=LEASE, **kwargs
        )


def write_for(lead, *, scheduled: datetime = NOW) -> MessageWrite:
    return MessageWrite(
        campaignLeadId=lead.campaignLeadId,
        stepOrder=lead.stepOrder,
        stepId=lead.stepId,
        messageId=new_id(),
        sendId=new_id(),
        subject="Hi",
        body="Body",
        model="template",
        promptVersion="v1",
        inputHash="h",
        promptTokens=0,
        completionTokens=0,
        latencyMs=0,
        costUsd=Decimal("0"),
        fallbackReason=None,
        scheduledFor=scheduled,
        nextStepOrder=lead.stepOrder + 1,
        nextScheduledDate=scheduled + timedelta(days=3),
        completed=False,
    )


def test_claim_takes_at_most_the_batch_size_oldest_first(sessions):
    seed(sessions, 7)
    token, leads = claim(sessions, 5)
    assert len(leads) == 5 and len(token) == 32
    assert all(lead.stepOrder == 1 and lead.stepId for lead in leads)
    _, rest = claim(sessions, 5, worker="w2")
    assert len(rest) == 2
    assert not {ld.campaignLeadId for ld in leads} & {ld.campaignLeadId for ld in rest}


def test_the_claims_planner_settings_end_with_its_statement(sessions):
    seed(sessions, 3)
    planner = ("enable_bitmapscan", "enable_hashjoin", "enable_mergejoin")
    with sessions.begin() as session:
        _, leads = claim_due_leads(session, as_of=NOW, now=NOW, limit=2, worker="w1", lease=LEASE)
        # The rest of the transaction (the thread statement, the caller's own) plans as usual.
        after = [session.execute(text(f"SHOW {name}")).scalar_one() for name in planner]
    assert len(leads) == 2
    assert after == ["on", "on", "on"]


def test_concurrent_claims_never_take_the_same_lead(sessions):
    seed(sessions, 300)
    with ThreadPoolExecutor(6) as pool:
        batches = list(pool.map(lambda i: claim(sessions, 40, worker=f"w{i}")[1], range(12)))
    ids = [lead.campaignLeadId for batch in batches for lead in batch]
    assert len(ids) == len(set(ids)) == 300
    assert all(len(batch) <= 40 for batch in batches)


def test_a_live_lease_is_never_reclaimed_and_an_expired_one_is(sessions):
    seed(sessions, 3)
    claim(sessions, 10)
    assert claim(sessions, 10, now=NOW + LEASE - timedelta(seconds=1))[1] == []
    _, again = claim(sessions, 10, now=NOW + LEASE + timedelta(seconds=1), worker="rescuer")
    assert len(again) == 3


def test_a_zombie_whose_lease_was_taken_over_writes_nothing(sessions):
    seed(sessions, 2)
    zombie_token, leads = claim(sessions, 10, worker="zombie")
    rescue_token, rescued = claim(sessions, 10, now=NOW + LEASE * 2, worker="rescuer")
    with sessions.begin() as session:
        written = record_messages(
            session, token=zombie_token, now=NOW, writes=[write_for(ld) for ld in leads]
        )
        held = hold_leads(
            session,
            token=zombie_token,
            now=NOW,
            holds=[Hold(leads[0].campaignLeadId, "x", NOW, give_up=True)],
        )
    assert written == set() and held == set()
    with sessions.begin() as session:
        written = record_messages(
            session, token=rescue_token, now=NOW, writes=[write_for(ld) for ld in rescued]
        )
    assert len(written) == 2
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EmailSend)) == 2
        assert session.scalar(select(func.count()).select_from(GeneratedMessage)) == 2
        rows = session.scalars(select(CampaignLead)).all()
    assert {(r.currentStepOrder, r.claimToken, r.status) for r in rows} == {(2, None, "active")}


def test_writing_the_same_batch_twice_is_a_no_op(sessions):
    seed(sessions, 1)
    token, leads = claim(sessions, 10)
    writes = [write_for(ld) for ld in leads]
    with sessions.begin() as session:
        assert len(record_messages(session, token=token, now=NOW, writes=writes)) == 1
    with sessions.begin() as session:
        assert record_messages(session, token=token, now=NOW, writes=writes) == set()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EmailSend)) == 1


def test_the_last_step_completes_the_lead(sessions):
    seed(sessions, 1, steps=1)
    token, [lead] = claim(sessions, 10)
    assert lead.nextStepDelayDays is None
    final = write_for(lead)
    final = MessageWrite(**{**final.__dict__, "completed": True, "nextScheduledDate": None})
    with sessions.begin() as session:
        record_messages(session, token=token, now=NOW, writes=[final])
    with sessions() as session:
        row = session.scalars(select(CampaignLead)).one()
    assert (row.status, row.nextScheduledDate, row.currentStepOrder) == ("completed", None, 2)


def test_preview_takes_nothing(sessions):
    seed(sessions, 3)
    with sessions() as session:
        assert len(preview_due_leads(session, as_of=NOW, now=NOW, limit=10)) == 3
    assert len(claim(sessions, 10)[1]) == 3


def test_only_active_leads_of_active_campaigns_that_are_due(sessions):
    campaign_id = seed(sessions, 2)
    seed(sessions, 2, due=NOW + timedelta(hours=1))
    with sessions.begin() as session:
        ws = factories.workspace(session)
        paused = factories.campaign(session, ws, status="paused")
        factories.enrolment(session, paused, factories.lead(session, ws), due=NOW)
    _, leads = claim(sessions, 10, campaign_id=campaign_id)
    assert len(leads) == 2
    assert claim(sessions, 10)[1] == []


def test_hold_records_the_reason_and_backs_off(sessions):
    seed(sessions, 2)
    token, leads = claim(sessions, 10)
    later = NOW + timedelta(hours=1)
    with sessions.begin() as session:
        hold_leads(
            session,
            token=token,
            now=NOW,
            holds=[
                Hold(leads[0].campaignLeadId, "template: firstName missing", later, give_up=False),
                Hold(leads[1].campaignLeadId, "LLM: HTTP 500", later, give_up=True),
            ],
        )
    with sessions() as session:
        rows = {r.id: r for r in session.scalars(select(CampaignLead))}
    held, failed = rows[leads[0].campaignLeadId], rows[leads[1].campaignLeadId]
    assert (held.status, held.attempts, held.lastError) == (
        "active",
        1,
        "template: firstName missing",
    )
    assert held.nextScheduledDate == later and held.claimToken is None
    assert (failed.status, failed.stopReason) == ("failed", "generation_failed")


def test_concurrent_send_insert_race_one_commits_the_other_is_a_no_op(sessions):
    """Two transactions insert the same (lead, step) send at once: one row, no error."""
    seed(sessions, 1)
    _, [lead] = claim(sessions, 1)
    row = {
        "campaignLeadId": lead.campaignLeadId,
        "stepId": lead.stepId,
        "scheduledFor": NOW.isoformat(),
    }
    message = {
        **row,
        "messageId": new_id(),
        "subject": "s",
        "body": "b",
        "model": "m",
        "promptVersion": "v",
        "inputHash": "h",
        "promptTokens": 0,
        "completionTokens": 0,
        "latencyMs": 0,
        "costUsd": "0",
        "fallbackReason": None,
        "status": "generated",
        "reviewReason": None,
    }
    with sessions.begin() as session:
        session.execute(INSERT_MESSAGES, {"rows": json.dumps([message]), "now": NOW})

    first, second = sessions(), sessions()
    first.begin()
    second.begin()
    inserted_first = first.execute(
        INSERT_SENDS, {"rows": json.dumps([{**row, "sendId": new_id()}]), "now": NOW}
    ).all()
    result: dict[str, object] = {}

    def racer():
        try:  # blocks on the unique index until the first transaction ends
            result["rows"] = second.execute(
                INSERT_SENDS, {"rows": json.dumps([{**row, "sendId": new_id()}]), "now": NOW}
            ).all()
            second.commit()
        except Exception as exc:  # the property is that this never happens
            result["error"] = exc

    thread = threading.Thread(target=racer)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # really concurrent: waiting on the first transaction
    first.commit()
    thread.join(10)
    first.close()
    second.close()
    assert len(inserted_first) == 1
    assert result == {"rows": []}
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EmailSend)) == 1


def test_the_message_insert_writes_every_column_of_a_message_content():
    assert list(CONTENT_COLUMNS) == [field.name for field in fields(MessageContent)]
