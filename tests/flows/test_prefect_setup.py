"""`campaign-pipeline prefect setup` against the harness (idempotent), the clear errors of it and
of `serve` without an API, and the production path: `prefect deploy --all`, then a process
worker started outside the checkout runs a deployment through prefect.yaml's pull step."""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from typer.testing import CliRunner

from cli.main import app
from deployments.serve import build_deployments

pytestmark = pytest.mark.flows

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "campaign-pipeline"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


async def delete_pool() -> None:
    async with get_client() as client:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_work_pool(POOL)


async def read_state(limit_name: str):
    async with get_client() as client:
        pool = await client.read_work_pool(POOL)
        limit = await client.read_global_concurrency_limit_by_name(limit_name)
    return pool, limit


def test_setup_creates_the_pool_and_the_llm_rate_limit_once(prefect_harness, monkeypatch):
    name = f"llm-rpm-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LLM_RATE_LIMIT_NAME", name)
    asyncio.run(delete_pool())

    first = invoke("prefect", "setup")
    assert first.exit_code == 0, first.output
    assert f"work pool '{POOL}': created (type process)" in first.output
    assert f"rate limit '{name}': created (500 requests/min, burst 50)" in first.output
    assert "generation results: kept in " in first.output
    assert f"prefect worker start --pool {POOL}" in first.output

    again = invoke("prefect", "setup")
    assert again.exit_code == 0, again.output
    assert f"work pool '{POOL}': unchanged" in again.output
    assert f"rate limit '{name}': unchanged" in again.output

    tuned = invoke("prefect", "setup", "--llm-rpm", "120", "--llm-burst", "4")
    assert f"rate limit '{name}': updated (500 requests/min, burst 50 -> 120" in tuned.output
    kept = invoke("prefect", "setup")  # no figures given: a tuned limit is left as it is
    assert f"rate limit '{name}': unchanged (120 requests/min, burst 4)" in kept.output
    burst = invoke("prefect", "setup", "--llm-burst", "6")  # only the figure given changes
    assert "updated (120 requests/min, burst 4 -> 120 requests/min, burst 6)" in burst.output

    pool, limit = asyncio.run(read_state(name))
    assert pool.type == "process" and pool.base_job_template["job_configuration"]
    assert (limit.limit, limit.slot_decay_per_second, limit.active) == (6, 2.0, True)


def test_setup_without_a_rate_limit_name_says_nothing_limits_the_llm(prefect_harness, monkeypatch):
    monkeypatch.delenv("LLM_RATE_LIMIT_NAME", raising=False)
    result = invoke("prefect", "setup")
    assert result.exit_code == 0, result.output
    assert "LLM rate limit: skipped (LLM_RATE_LIMIT_NAME is unset" in result.output


@pytest.mark.parametrize("command", [("prefect", "setup"), ("serve",)])
def test_an_unreachable_api_is_one_line_not_a_traceback(command):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        result = invoke(*command)
    assert result.exit_code == 1
    assert f"error: cannot reach the Prefect API at {url}:" in result.output
    assert "Traceback" not in result.output
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = invoke(*command)
    assert result.exit_code == 1
    assert "error: PREFECT_API_URL is not set" in result.output


@pytest.mark.slow
def test_deploy_all_then_a_worker_outside_the_checkout_runs_a_deployment(worker_env, tmp_path):
    assert invoke("prefect", "setup").exit_code == 0
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "PWD" and not key.startswith("PYTEST")  # a service has no shell's PWD
    } | {
        "PREFECT_API_URL": get_current_settings().api.url,
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=180,
        capture_output=True,
    )

    async def trigger():
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(
                "ingest-engagement-events/ingest-engagement-events"
            )
            pregenerate = await client.read_deployment_by_name(
                "pregenerate-upcoming-steps/pregenerate-upcoming-steps"
            )
        run = await run_deployment(deployment.id, parameters={"dry_run": True}, timeout=0)
        return deployment, pregenerate, run

    deployment, pregenerate, run = asyncio.run(trigger())
    # `prefect deploy` keeps each schedule's own parameters: the hourly poll never submits.
    assert sorted((s.schedule.cron, s.slug, s.parameters) for s in pregenerate.schedules) == [
        ("0 2 * * *", "daily-submit", {}),
        ("30 * * * *", "hourly-poll", {"submit": False}),
    ]
    assert pregenerate.parameters == {"max_leads": 200000, "submit": True}
    assert deployment.work_pool_name == POOL
    assert deployment.pull_steps == [{"deployments.pull.enter_checkout": {}}]
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
        ("*/10 * * * *", "UTC")
    ]

    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
        cwd=tmp_path,  # anywhere but the checkout: the pull step finds it
        env=env,
        timeout=180,
        capture_output=True,
        text=True,
    )

    async def finished():
        async with get_client() as client:
            flow_run = await client.read_flow_run(run.id)
            artifacts = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
        return flow_run, {a.key for a in artifacts}

    flow_run, artifacts = asyncio.run(finished())
    assert flow_run.state.is_completed(), (flow_run.state, worker.stdout[-3000:], worker.stderr)
    assert "ingest-engagement-events-summary" in artifacts

    async def switch_to_serve(deployments):
        runner = Runner(pause_on_shutdown=False)
        for served in deployments:
            await runner.add_deployment(served)
        async with get_client() as client:
            return await client.read_deployment(deployment.id)

    # serving the same deployments takes them off the pool, so no worker races `serve` for runs
    served = asyncio.run(switch_to_serve(build_deployments()))
    assert served.work_pool_name is None and served.pull_steps is None
