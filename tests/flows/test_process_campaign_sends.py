"""`process-campaign-sends` end to end under the Prefect harness, on real PostgreSQL."""

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from pydantic import SecretStr
from sqlalchemy import func, select

import tasks.generation as generation_tasks
from core.generation.config import GenerationConfig
from core.generation.generate import prepare
from core.generation.llm import TEMPLATE_MODEL
from core.generation.prompt import PROMPT_VERSION
from core.settings import sqlalchemy_url
from db.base import utcnow
from db.engine import DatabaseConfig
from db.models import CampaignLead, EmailSend, GeneratedMessage
from flows.process_campaign_sends import process_campaign_sends
from tasks.generation import claim_lead_batch, generate_messages, write_messages
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import PERSONAL_LINE
from tests.support.run_records import run_with_artifacts

pytestmark = pytest.mark.flows

# Wednesday 25 November 2026, 15:00 UTC: 10:00 in New York, inside a 9-17 weekday window.
AS_OF = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
RULES = {"timezone": "America/New_York", "fromName": "Alex", "fromEmail": "alex@seller.example"}


def seed(sessions, n: int, *, steps: int = 3, rules: dict | None = None, **lead_fields):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(
            session, ws, steps=steps, sendingRules=rules or RULES, goal="Book calls"
        )
        for i in range(n):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example", **lead_fields)
            factories.enrolment(session, camp, lead, due=AS_OF - timedelta(minutes=5))
        return camp.id


def run(**params):
    return asyncio.run(process_campaign_sends(as_of=AS_OF, **params))


def test_offline_run_schedules_a_send_per_due_lead_and_advances_it(run_settings, sessions):
    campaign_id = seed(sessions, 5)
    counts = run(batch_size=2)
    assert counts[campaign_id].claimed == 5
    assert counts[campaign_id].scheduled == 5
    with sessions() as session:
        sends = session.scalars(select(EmailSend)).all()
        messages = session.scalars(select(GeneratedMessage)).all()
        leads = session.scalars(select(CampaignLead)).all()
    assert {s.status for s in sends} == {"scheduled"}
    assert {s.scheduledFor for s in sends} == {AS_OF}
    assert sorted(s.toEmail for s in sends) == [f"lead{i}@buyer.example" for i in range(5)]
    assert {m.model for m in messages} == {"template"}
    assert {m.subject for m in messages} == {"Step 1 for Sarah"}
    assert {(c.currentStepOrder, c.nextScheduledDate, c.claimToken) for c in leads} == {
        (2, AS_OF + timedelta(days=3), None)
    }
    assert run() == {}  # nothing is due any more


def test_a_lead_with_a_missing_variable_is_held_with_its_reason(run_settings, sessions):
    campaign_id = seed(sessions, 2, companyName=None)
    counts = run()
    assert counts[campaign_id].held == 2 and counts[campaign_id].scheduled == 0
    with sessions() as session:
        leads = session.scalars(select(CampaignLead)).all()
    assert {c.status for c in leads} == {"active"}
    assert all("companyName" in c.lastError for c in leads)
    assert {c.nextScheduledDate for c in leads} == {AS_OF + timedelta(hours=24)}


def test_llm_run_is_cached_so_a_rerun_makes_no_llm_call(run_settings, sessions):
    campaign_id = seed(sessions, 4)
    with FakeOpenAI(latency_ms=0) as server:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=server.base_url)
        preview = run(dry_run=True)
        assert preview[campaign_id].generated == 4
        assert preview[campaign_id].scheduled == 0
        calls_after_preview = server.stats().requests
        assert calls_after_preview == 4
        counts = run()
        assert server.stats().requests == calls_after_preview  # every draft came from the cache
    assert counts[campaign_id].cache_hits == 4
    assert counts[campaign_id].scheduled == 4
    with sessions() as session:
        messages = session.scalars(select(GeneratedMessage)).all()
    assert {m.model for m in messages} == {"gpt-4o-mini"}
    assert all(m.body.startswith(PERSONAL_LINE) for m in messages)
    assert all(m.promptTokens > 0 and m.inputHash for m in messages)


def seed_follow_up(sessions) -> tuple[str, EmailSend]:
    """One lead due at step 2, whose step 1 went out on Sunday 22 November, 10:00 in New York."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=RULES, goal="Book calls")
        lead = factories.lead(session, ws, email="ann@buyer.example")
        factories.enrolment(
            session, camp, lead, due=AS_OF - timedelta(minutes=5), currentStepOrder=2
        )
        first = factories.scheduled_send(
            session,
            camp,
            lead,
            step=1,
            subject="Cutting onboarding time at Acme",
            body="Hi Sarah,\n\nWe cut onboarding from weeks to days.\n\nAlex",
            status="sent",
            sentAt=AS_OF - timedelta(days=3),
        )
        return camp.id, first


def sent_thread(request) -> list[dict]:
    [block] = re.findall(r"<thread>(.*?)</thread>", request.body["messages"][1]["content"])
    return json.loads(block)


def test_a_follow_up_knows_its_thread_and_is_cached_by_it(run_settings, sessions):
    campaign_id, first = seed_follow_up(sessions)
    with FakeOpenAI(latency_ms=0) as server:
        run_settings.update(openai_api_key="sk-test-not-real", openai_base_url=server.base_url)
        assert run(dry_run=True)[campaign_id].generated == 1
        [request] = server.request_log()
        assert sent_thread(request) == [
            {
                "step": 1,
                "sentOn": "2026-11-22",
                "subject": "Cutting onboarding time at Acme",
                "body": "Hi Sarah,\n\nWe cut onboarding from weeks to days.\n\nAlex",
            }
        ]
        assert "Follow up on what was said" in request.body["messages"][0]["content"]
        # The same thread in another run: the answer comes from the cache.
        assert run(dry_run=True)[campaign_id].cache_hits == 1
        assert server.stats().requests == 1
        # Ann clicked a link of the first email: the thread changed, so the email is written anew.
        with sessions.begin() as session:
            clicked = AS_OF - timedelta(days=1)
            factories.event(session, first, "click", clicked, url="https://seller.example/demo")
        assert run(dry_run=True)[campaign_id].cache_hits == 0
        assert server.stats().requests == 2
        assert sent_thread(server.request_log()[1])[0]["cameBack"] == [
            {"kind": "click", "on": "2026-11-24"}
        ]
        counts = run()
        assert server.stats().requests == 2
    assert (counts[campaign_id].cache_hits, counts[campaign_id].scheduled) == (1, 1)
    with sessions() as session:
        [message] = session.scalars(
            select(GeneratedMessage).where(GeneratedMessage.id != first.generatedMessageId)
        ).all()
    assert message.body.startswith(PERSONAL_LINE)
    assert message.promptVersion == PROMPT_VERSION


def test_dry_run_changes_nothing_and_publishes_previews(run_settings, sessions):
    seed(sessions, 3)
    _, artifacts, _ = asyncio.run(
        run_with_artifacts(process_campaign_sends, as_of=AS_OF, dry_run=True)
    )
    with sessions() as session:
        assert session.scalars(select(EmailSend)).all() == []
        assert {c.currentStepOrder for c in session.scalars(select(CampaignLead))} == {1}
    assert "process-campaign-sends-preview" in artifacts


def test_two_overlapping_runs_process_each_of_1000_leads_exactly_once(run_settings, sessions):
    campaign_id = seed(sessions, 1000)
    # Each thread runs in a copy of this context: the test's run settings and result storage.
    contexts = [copy_context() for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda ctx: ctx.run(run, batch_size=100), contexts))
    claimed = [r[campaign_id].claimed for r in results if campaign_id in r]
    assert sum(claimed) == 1000
    assert sum(r[campaign_id].scheduled for r in results if campaign_id in r) == 1000
    with sessions() as session:
        per_lead = session.execute(
            select(EmailSend.leadId, func.count()).group_by(EmailSend.leadId)
        ).all()
        steps = {c.currentStepOrder for c in session.scalars(select(CampaignLead))}
    assert len(per_lead) == 1000 and {count for _, count in per_lead} == {1}
    assert steps == {2}


def test_the_tasks_use_the_configs_they_are_given_never_the_environment(
    database_url, sessions, prefect_harness, monkeypatch
):
    # An environment that would fail every task that read it.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/nowhere")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-never-read")
    campaign_id = seed(sessions, 3)
    database = DatabaseConfig(url=SecretStr(sqlalchemy_url(database_url)))
    config = GenerationConfig(model=TEMPLATE_MODEL, claim_lease=timedelta(minutes=2))

    @flow
    async def one_batch():
        claimed_at = utcnow()
        claim = await claim_lead_batch(
            database,
            config,
            as_of=AS_OF,
            limit=10,
            worker="test",
            campaign_id=campaign_id,
            dry_run=False,
        )
        with sessions() as session:
            leases = set(session.scalars(select(CampaignLead.claimedUntil)))
        outcomes = await generate_messages(claim.leads, config)
        counts = await write_messages(database, config, claim, outcomes, as_of=AS_OF)
        return claimed_at, leases, counts

    claimed_at, leases, counts = asyncio.run(one_batch())
    [lease] = leases  # one claim, one lease for all three
    assert claimed_at + timedelta(minutes=2) <= lease <= utcnow() + timedelta(minutes=2)
    assert (counts[campaign_id].claimed, counts[campaign_id].scheduled) == (3, 3)
    with sessions() as session:
        assert {m.model for m in session.scalars(select(GeneratedMessage))} == {TEMPLATE_MODEL}


def test_a_batch_s_first_calls_start_before_the_rest_of_it_is_prepared(
    database_url, sessions, prefect_harness, monkeypatch
):
    campaign_id = seed(sessions, 200)
    database = DatabaseConfig(url=SecretStr(sqlalchemy_url(database_url)))
    config = GenerationConfig(model=TEMPLATE_MODEL)
    prepared: list[str] = []
    seen_at_first_call: list[int] = []

    def counted_prepare(lead, *, model):
        prepared.append(lead.campaignLeadId)
        # As slow as a long template: the calls' thread gets the GIL while leads are prepared.
        time.sleep(0.002)
        return prepare(lead, model=model)

    class FirstCallWatched:
        def __init__(self, inner) -> None:
            self._inner = inner

        async def generate(self, messages, *, model):
            if not seen_at_first_call:
                seen_at_first_call.append(len(prepared))
            return await self._inner.generate(messages, model=model)

        async def aclose(self) -> None:
            await self._inner.aclose()

    open_generator = GenerationConfig.open_generator
    monkeypatch.setattr(generation_tasks, "prepare", counted_prepare)
    monkeypatch.setattr(
        GenerationConfig, "open_generator", lambda self: FirstCallWatched(open_generator(self))
    )

    @flow
    async def one_batch():
        claim = await claim_lead_batch(
            database,
            config,
            as_of=AS_OF,
            limit=200,
            worker="test",
            campaign_id=campaign_id,
            dry_run=False,
        )
        return await generate_messages(claim.leads, config)

    outcomes = asyncio.run(one_batch())
    assert len(outcomes) == 200 and len(prepared) == 200
    # The first slice, not the whole batch, is prepared before the first call leaves.
    [first_call] = seen_at_first_call
    assert generation_tasks.PREPARE_SLICE <= first_call < 2 * generation_tasks.PREPARE_SLICE
