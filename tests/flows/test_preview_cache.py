"""A preview and `process-campaign-sends` share one cache: the flows' result storage, resolved
outside a run as a run resolves it (here through the harness's Prefect API)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.generation.config import GenerationConfig
from core.generation.preview import StepPreview, preview_step
from db.base import utcnow
from db.models import GeneratedMessage
from db.queries.preview import preview_lead
from flows.process_campaign_sends import process_campaign_sends
from tasks.generation import cache_outside_runs
from tests import factories
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.flows

AS_OF = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
RULES = {"timezone": "America/New_York", "fromName": "Alex", "fromEmail": "alex@seller.example"}
ADDRESSES = [f"lead{i}@buyer.example" for i in range(3)]


def seed(sessions) -> str:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        campaign = factories.campaign(session, ws, sendingRules=RULES, goal="Book calls")
        for address in ADDRESSES:
            lead = factories.lead(session, ws, email=address)
            factories.enrolment(session, campaign, lead, due=AS_OF - timedelta(minutes=5))
        return campaign.id


def preview(sessions, settings, campaign_id: str, address: str) -> StepPreview:
    with sessions() as session:
        lead = preview_lead(
            session, campaign_id=campaign_id, step_order=1, now=utcnow(), email=address
        )

    async def generate() -> StepPreview:
        cache = (await cache_outside_runs())()
        return await preview_step(lead, GenerationConfig.from_settings(settings), cache)

    return asyncio.run(generate())


def test_a_run_pays_nothing_for_a_previewed_draft_nor_a_preview_for_a_run_draft(
    run_settings, sessions
):
    campaign_id = seed(sessions)
    with FakeOpenAI(latency_ms=0) as llm:
        settings = run_settings.update(
            openai_api_key="sk-test-not-real", openai_base_url=llm.base_url
        )
        first = preview(sessions, settings, campaign_id, ADDRESSES[0])
        assert not first.cacheHit and first.spent.llmCalls == 1
        assert llm.stats().requests == 1

        counts = asyncio.run(process_campaign_sends(as_of=AS_OF))
        assert counts[campaign_id].scheduled == 3
        assert counts[campaign_id].cache_hits == 1  # the previewed lead
        assert llm.stats().requests == 3  # the other two

        later = preview(sessions, settings, campaign_id, ADDRESSES[1])
        assert later.cacheHit and later.spent.llmCalls == 0
        assert llm.stats().requests == 3

    with sessions() as session:
        messages = {m.inputHash: m for m in session.scalars(select(GeneratedMessage))}
    # What the run wrote is what the previews showed, draft and cost alike.
    for shown in (first, later):
        assert shown.inputHash is not None and shown.draft is not None
        written = messages[shown.inputHash]
        assert (written.subject, written.body) == (shown.draft.subject, shown.draft.body)
        assert (written.promptTokens, float(written.costUsd)) == (
            shown.promptTokens,
            shown.costUsd,
        )
