"""The deployments of prefect.yaml, served as `campaign-pipeline serve` serves them, triggered
through the API like the UI's Run and Retry buttons: each run completes in its own process and
publishes its artifacts; a second run of a busy deployment is cancelled, not queued; a Retry
makes no LLM call the first attempt already paid for."""

import asyncio
import contextlib
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments.flow_runs import arun_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.runner import Runner
from prefect.states import AwaitingRetry
from sqlalchemy import func, select

from db.base import utcnow
from db.models import EmailSend
from deployments.serve import build_deployments
from deployments.spec import read_deployments
from tests import factories
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.flows

ROOT = Path(__file__).resolve().parents[2]
RULES = {"timezone": "America/New_York", "fromName": "Alex", "fromEmail": "alex@seller.example"}


def seed(sessions, n: int = 2) -> str:
    """`n` leads due now."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=RULES, goal="Book calls")
        for i in range(n):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, due=utcnow() - timedelta(minutes=5))
        return camp.id


def parameters(campaign_id: str, tmp_path: Path) -> dict[str, dict]:
    """Each deployment's defaults from prefect.yaml, made harmless for a test."""
    specs = {spec.name: spec for spec in read_deployments()}
    return {
        "process-campaign-sends": specs["process-campaign-sends"].parameters
        | {"campaign_id": campaign_id, "max_leads": 10},
        "send-scheduled-emails": specs["send-scheduled-emails"].parameters
        | {"dry_run": True, "max_wait_seconds": 0},
        "ingest-engagement-events": specs["ingest-engagement-events"].parameters
        | {"dry_run": True},
        "campaign-report": specs["campaign-report"].parameters
        | {"output": str(tmp_path / "report.csv")},
    }


BUSY = {StateType.PENDING, StateType.RUNNING}
ARTIFACTS = {
    "process-campaign-sends": {"process-campaign-sends", "process-campaign-sends-summary"},
    "send-scheduled-emails": {
        "send-scheduled-emails",
        "send-scheduled-emails-unknown",
        "send-scheduled-emails-summary",
        "send-scheduled-emails-preview",
    },
    "ingest-engagement-events": {
        "ingest-engagement-events",
        "ingest-engagement-events-malformed",
        "ingest-engagement-events-summary",
    },
    "campaign-report": {
        "campaign-report-steps",
        "campaign-report-campaigns",
        "campaign-report-summary",
    },
}


async def run_while_busy(full_name: str, parameters: dict):
    """Start a run, and once it holds the deployment's one slot start another; both, finished."""
    first = await arun_deployment(full_name, parameters=parameters, timeout=0)
    async with get_client() as client:
        with anyio.fail_after(60):
            while (state := (await client.read_flow_run(first.id)).state) is None or (
                state.type not in BUSY
            ):
                assert state is None or not state.is_final(), (
                    f"the first run ended {state} before it was busy"
                )
                await asyncio.sleep(0.1)
    second = await arun_deployment(full_name, parameters=parameters, timeout=75, poll_interval=1)
    return await wait_for_flow_run(first.id, timeout=75), second


@contextlib.asynccontextmanager
async def serving(deployments):
    """What `campaign-pipeline serve` does (serve() is this, minus a way to stop it from a
    test): register the deployments and run their runs until the block ends."""
    runner = Runner(name="test-serve", query_seconds=1, pause_on_shutdown=False, limit=None)
    ids = {d.name: await runner.add_deployment(d) for d in deployments}
    async with anyio.create_task_group() as group:
        group.start_soon(runner.start)
        try:
            yield ids
        finally:
            await runner.astop()
            group.cancel_scope.cancel()


async def serve_and_trigger(deployments, runs: dict[str, dict], busy: str):
    """Serve the deployments and run each once with `runs`, `busy` with a second run started
    while the first holds its slot; returns the finished runs, the second run of `busy`, the
    deployments as registered and each run's artifacts."""
    full_names = {d.name: f"{d.flow_name}/{d.name}" for d in deployments}
    once = [name for name in runs if name != busy]
    async with serving(deployments) as ids:
        *finished, (busy_run, second) = await asyncio.gather(
            *(
                arun_deployment(
                    full_names[name], parameters=runs[name], timeout=75, poll_interval=1
                )
                for name in once
            ),
            run_while_busy(full_names[busy], runs[busy]),
        )
    by_name = dict(zip(once, finished, strict=True)) | {busy: busy_run}
    async with get_client() as client:
        registered = {name: await client.read_deployment(i) for name, i in ids.items()}
        artifacts = {
            name: {
                a.key
                for a in await client.read_artifacts(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
            }
            for name, run in by_name.items()
        }
    return by_name, second, registered, artifacts


def test_each_served_deployment_runs_to_completion_with_its_artifacts(
    worker_env, sessions, tmp_path
):
    campaign_id = seed(sessions)
    runs = parameters(campaign_id, tmp_path)
    finished, second, registered, artifacts = asyncio.run(
        serve_and_trigger(build_deployments(), runs, busy="ingest-engagement-events")
    )

    for name, keys in ARTIFACTS.items():
        assert finished[name].state.is_completed(), (name, finished[name].state)
        assert artifacts[name] >= keys, name
    # a run started while another held the deployment's one slot: CANCEL_NEW, never started
    assert second.state.is_cancelled(), second.state
    assert "concurrency limit" in second.state.message

    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(EmailSend)) == 2
    assert "campaign_id" in (tmp_path / "report.csv").read_text(encoding="utf-8")

    for spec in read_deployments():
        deployment = registered[spec.name]
        assert deployment.work_pool_name is None and deployment.paused is False
        assert deployment.parameters == spec.parameters and deployment.tags == list(spec.tags)
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy == spec.collision_strategy
        # The launch review (tests/flows/test_review_campaign_sample.py) runs only by hand.
        # In whatever order the server lists them.
        crons = sorted(
            (s.schedule.cron, s.schedule.timezone, s.slug or "", s.parameters)
            for s in deployment.schedules
        )
        assert crons == sorted((c.cron, "UTC", c.slug or "", c.parameters) for c in spec.schedules)


async def run_then_retry(deployments, parameters: dict, llm: FakeOpenAI):
    """Run once, then press Retry (what the UI's button sends); LLM requests after each."""
    async with serving(deployments):
        (deployment,) = deployments
        name = f"{deployment.flow_name}/{deployment.name}"
        first = await arun_deployment(name, parameters=parameters, timeout=75, poll_interval=1)
        paid = llm.stats().requests
        async with get_client() as client:
            await client.set_flow_run_state(
                first.id, AwaitingRetry(message="Retry from the UI"), force=True
            )
        retried = await wait_for_flow_run(first.id, timeout=75)
    return first, paid, retried, llm.stats().requests


def test_a_retry_pays_for_no_generation_the_first_attempt_finished(worker_env, sessions, tmp_path):
    campaign_id = seed(sessions, 3)
    (generation,) = [d for d in read_deployments() if d.name == "process-campaign-sends"]
    with FakeOpenAI(latency_ms=0) as llm:
        worker_env.setenv("OPENAI_API_KEY", "sk-test-not-real")
        worker_env.setenv("OPENAI_BASE_URL", llm.base_url)
        first, paid, retried, total = asyncio.run(
            run_then_retry(
                build_deployments([generation]),
                generation.parameters | {"campaign_id": campaign_id, "dry_run": True},
                llm,
            )
        )
    assert first.state.is_completed() and paid == 3
    assert retried.state.is_completed() and retried.run_count == 2
    assert total == paid  # the second attempt, a new process, found all three in storage
    # ... which is the result storage the serving process was configured with
    assert len(list((tmp_path / "results").iterdir())) == 3


async def schedule_and_serve(deployment, start: datetime, end: datetime):
    """Serve the deployment, have the server create its schedules' runs between start and end
    (as its scheduler does, in the past so they are all due now), and wait for them to end."""
    async with serving([deployment]) as ids:
        deployment_id = ids[deployment.name]
        async with get_client() as client:
            answer = await client.request(
                "POST",
                "/deployments/{id}/schedule",
                path_params={"id": deployment_id},
                json={"start_time": start.isoformat(), "end_time": end.isoformat()},
            )
            answer.raise_for_status()
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime.model_validate(
                        {"after_": start, "before_": end}
                    )
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            )
        return [await wait_for_flow_run(run.id, timeout=75) for run in runs]


def test_the_hourly_poll_runs_with_its_own_parameters_under_the_same_one_run_limit(
    worker_env, sessions
):
    (spec,) = [d for d in read_deployments() if d.name == "pregenerate-upcoming-steps"]
    # Yesterday from 01:59 to 02:31 UTC: the daily run at 02:00 and a poll at 02:30, both due.
    day = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    runs = asyncio.run(
        schedule_and_serve(
            build_deployments([spec])[0],
            day + timedelta(hours=1, minutes=59),
            day + timedelta(hours=2, minutes=31),
        )
    )
    by_schedule = {run.created_by.display_value: run for run in runs}
    assert set(by_schedule) == {"daily-submit", "hourly-poll"}
    assert by_schedule["daily-submit"].parameters == {"max_leads": 200000, "submit": True}
    assert by_schedule["hourly-poll"].parameters == {"max_leads": 200000, "submit": False}
    # Due together, they share the deployment's one slot: one runs, the other is cancelled.
    states = sorted(run.state.type.value for run in runs)
    assert states == ["CANCELLED", "COMPLETED"], [run.state for run in runs]
    (cancelled,) = [run for run in runs if run.state.is_cancelled()]
    assert "concurrency limit" in cancelled.state.message
