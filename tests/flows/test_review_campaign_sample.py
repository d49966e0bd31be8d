"""`review-campaign-sample`, served from prefect.yaml as `campaign-pipeline serve` serves it and
run through the API: it writes sample drafts without writing a row, suspends for a person's
answer, and on resume with that answer launches the campaign or leaves it as it was."""

import asyncio

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments.flow_runs import arun_deployment
from prefect.flow_runs import aresume_flow_run, wait_for_flow_run
from sqlalchemy import func, select

from db.base import utcnow
from db.models import Campaign, EmailSend, GeneratedMessage
from deployments.serve import build_deployments
from deployments.spec import read_deployments
from tests import factories
from tests.flows.test_deployments_serve import serving
from tests.support.run_records import run_artifacts, run_log_messages, shipped_log_messages

pytestmark = pytest.mark.flows

RULES = {"timezone": "UTC", "fromName": "Alex", "fromEmail": "alex@seller.example"}
NAME = "review-campaign-sample/review-campaign-sample"


def seed(sessions, status: str) -> str:
    """A campaign not launched yet, with three enrolled leads."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, status=status, sendingRules=RULES)
        for i in range(3):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, due=utcnow())
        return camp.id


async def until_suspended(run_id) -> None:
    async with get_client() as client:
        with anyio.fail_after(90):
            while (state := (await client.read_flow_run(run_id)).state) is None or (
                state.type is not StateType.PAUSED
            ):
                assert state is None or not state.is_final(), state
                await asyncio.sleep(0.2)


async def review_and_answer(deployments, answers: dict[str, dict], seen: dict, sessions):
    """Start a review of each campaign, and once suspended answer it; the finished runs."""
    async with serving(deployments):
        runs = {
            campaign_id: await arun_deployment(
                NAME, parameters={"campaign_id": campaign_id, "sample_size": 2}, timeout=0
            )
            for campaign_id in answers
        }
        for campaign_id, run in runs.items():
            await until_suspended(run.id)
            with sessions() as session:
                seen[campaign_id] = (
                    session.get(Campaign, campaign_id).status,
                    session.scalar(select(func.count()).select_from(GeneratedMessage)),
                    session.scalar(select(func.count()).select_from(EmailSend)),
                    {a.key: a.data for a in await run_artifacts(run.id)},
                )
            await aresume_flow_run(run.id, run_input=answers[campaign_id])
        finished = {
            campaign_id: await wait_for_flow_run(run.id, timeout=90)
            for campaign_id, run in runs.items()
        }
        # Still serving: a run's process ships its last logs after its final state, and
        # leaving `serving` stops it; the decision's log line is the last the flow writes.
        for run in runs.values():
            await shipped_log_messages(run.id, until=logs_the_decision)
        return finished


def logs_the_decision(messages: list[str]) -> bool:
    return any("launch of campaign" in m for m in messages)


def test_the_sample_suspends_and_the_answer_launches_or_leaves_the_campaign(worker_env, sessions):
    approved, rejected = seed(sessions, "draft"), seed(sessions, "draft")
    answers = {
        approved: {"approve": True, "note": "Reads well"},
        rejected: {"approve": False, "note": "Step 1 is too long"},
    }
    seen: dict[str, object] = {}

    (spec,) = [s for s in read_deployments() if s.name == "review-campaign-sample"]
    finished = asyncio.run(review_and_answer(build_deployments([spec]), answers, seen, sessions))

    for campaign_id in answers:
        status, messages, sends, artifacts = seen[campaign_id]
        # While it waited: still a draft, and the sample wrote nothing but its artifact.
        assert (status, messages, sends) == ("draft", 0, 0)
        sample = artifacts["review-campaign-sample"]
        assert sample.count("## Enrolment ") == 2 and "**Subject:** Step 1 for Sarah" in sample
        assert "@buyer.example" not in sample
        assert finished[campaign_id].state.is_completed(), finished[campaign_id].state
    with sessions() as session:
        assert session.get(Campaign, approved).status == "active"
        assert session.get(Campaign, rejected).status == "draft"
        assert session.scalar(select(func.count()).select_from(GeneratedMessage)) == 0

    decisions = {
        campaign_id: {a.key: a.data for a in asyncio.run(run_artifacts(run.id))}
        for campaign_id, run in finished.items()
    }
    assert "now active (it was draft)" in decisions[approved]["review-campaign-sample-decision"]
    kept = decisions[rejected]["review-campaign-sample-decision"]
    assert "Rejected: the campaign was left draft." in kept and "> Step 1 is too long" in kept

    def names_the_rejection(messages: list[str]) -> bool:
        return any("rejected" in m and "Step 1 is too long" in m for m in messages)

    logs = asyncio.run(run_log_messages(finished[rejected].id))
    assert names_the_rejection(logs)
