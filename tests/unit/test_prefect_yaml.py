"""prefect.yaml: the five scheduled deployments, each a real flow with valid defaults, a UTC cron
schedule and one run at a time, and the launch review, run by hand; pregenerate-upcoming-steps
also polls hourly with its own parameters; `campaign-pipeline serve` builds exactly the same ones
from it."""

import asyncio
import itertools
import os
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule
from prefect.utilities.callables import parameter_schema
from prefect.utilities.importtools import import_object
from prefect.utilities.schema_tools import validate

from core.analytics.campaign_report import DEFAULT_DAYS
from deployments.serve import build_deployments
from deployments.spec import read_deployments, work_pool_name

ROOT = Path(__file__).resolve().parents[2]
EVERY = {
    "process-campaign-sends": ("*/15 * * * *", timedelta(minutes=15)),
    "send-scheduled-emails": ("*/5 * * * *", timedelta(minutes=5)),
    "ingest-engagement-events": ("*/10 * * * *", timedelta(minutes=10)),
    "campaign-report": ("0 6 * * *", timedelta(days=1)),
    "pregenerate-upcoming-steps": ("0 2 * * *", timedelta(days=1)),
}
# pregenerate-upcoming-steps' second schedule: an hourly poll that only reads finished batches.
POLL = {
    "cron": "30 * * * *",
    "timezone": "UTC",
    "slug": "hourly-poll",
    "parameters": {"submit": False},
}
# Run by hand, never on a schedule.
ON_DEMAND = ("review-campaign-sample",)
DEPLOYMENTS = (*EVERY, *ON_DEMAND)
# What a run must be given, since the deployment cannot know it (the run form asks).
REQUIRED = {"review-campaign-sample": {"campaign_id": "a-campaign"}}


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))


def entry(document: dict, name: str) -> dict:
    (found,) = [d for d in document["deployments"] if d["name"] == name]
    return found


def flow_of(deployment: dict) -> Flow:
    """The flow the way `prefect deploy` and a worker load it: from the entrypoint's file."""
    path, _, function = deployment["entrypoint"].rpartition(":")
    return load_flow_from_entrypoint(f"{ROOT / path}:{function}")


def test_exactly_these_deployments_on_one_process_pool(document):
    assert [d["name"] for d in document["deployments"]] == list(DEPLOYMENTS)
    PrefectYamlModel.model_validate(document)  # the shape `prefect deploy` accepts
    assert {d["work_pool"]["name"] for d in document["deployments"]} == {"campaign-pipeline"}
    assert work_pool_name(read_deployments()) == "campaign-pipeline"


def test_nothing_is_built_or_pushed_and_runs_enter_the_checkout(document, tmp_path, monkeypatch):
    assert document["build"] is None and document["push"] is None
    assert document["pull"] == [{"deployments.pull.enter_checkout": {}}]
    monkeypatch.chdir(tmp_path)  # a process worker starts each run in a temporary directory
    ((step, inputs),) = document["pull"][0].items()
    outputs = import_object(step)(**inputs)  # as a worker's step runner imports and calls it
    assert Path(os.getcwd()) == ROOT
    assert outputs["directory"] == str(ROOT)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_the_entrypoint_is_the_deployments_flow(document, name):
    deployment = entry(document, name)
    flow = flow_of(deployment)
    assert isinstance(flow, Flow)
    assert flow.name == deployment["flow_name"] == name


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_default_parameters_fit_the_flow(document, name):
    deployment = entry(document, name)
    flow = flow_of(deployment)
    parameters = deployment["parameters"]
    flow.validate_parameters(REQUIRED.get(name, {}) | parameters)  # what the engine does
    schema = parameter_schema(flow).model_dump_for_openapi()
    assert set(parameters) <= set(schema["properties"])
    # what the server checks on deploy (enforce_parameter_schema) and on every run's form
    validate(parameters, schema, raise_on_error=True, ignore_required=True)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_every_parameter_of_the_run_form_is_described_and_bounded(document, name):
    # The UI's form takes its help text from the docstring's Args section, not from Field.
    schema = parameter_schema(flow_of(entry(document, name))).model_dump_for_openapi()
    for parameter, spec in schema["properties"].items():
        assert spec.get("description"), f"{name}: {parameter} has no description in the form"
        if parameter.endswith(("_size", "max_leads", "max_sends", "_seconds")):
            assert spec.get("minimum") is not None, f"{name}: {parameter} has no lower bound"
    if name == "campaign-report":
        assert f"{DEFAULT_DAYS} days" in schema["properties"]["since"]["description"]


def fire_times(schedule: dict, n: int) -> list[datetime]:
    """The first n times the Prefect server would start a run of this schedule."""
    server_side = ServerCronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    start = datetime(2026, 3, 29, tzinfo=UTC)
    return [date for date in asyncio.run(server_side.get_dates(n=n, start=start))]


@pytest.mark.parametrize("name", EVERY)
def test_the_schedule_is_a_utc_cron_at_the_intended_pace(document, name):
    schedule, *others = entry(document, name)["schedules"]
    cron, gap = EVERY[name]
    assert {key: schedule[key] for key in ("cron", "timezone")} == {"cron": cron, "timezone": "UTC"}
    # The deployment's own parameters: only the poll has a schedule of its own.
    assert "parameters" not in schedule
    assert others == ([POLL] if name == "pregenerate-upcoming-steps" else [])
    assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).timezone == "UTC"
    dates = fire_times(schedule, 3)
    assert [b - a for a, b in itertools.pairwise(dates)] == [gap, gap]


def test_finished_batches_are_polled_hourly_never_with_the_daily_submission(document):
    deployment = entry(document, "pregenerate-upcoming-steps")
    daily, poll = deployment["schedules"]
    assert daily["slug"] == "daily-submit" and poll == POLL
    # A scheduled run's parameters are the deployment's with its schedule's on top (the server
    # merges them the same way): the poll reads and retires, it never submits.
    flow = flow_of(deployment)
    for schedule, submits in [(daily, True), (poll, False)]:
        parameters = deployment["parameters"] | schedule.get("parameters", {})
        assert parameters["submit"] is submits
        flow.validate_parameters(parameters)
    # A batch that finishes at any moment is read within the hour.
    polls = fire_times(poll, 48)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(polls))
    # Never at the same time: the one-at-a-time limit (CANCEL_NEW, whichever schedule started
    # the run) would cancel the second of the two, which could be the daily submission.
    assert not set(polls) & set(fire_times(daily, 2))


@pytest.mark.parametrize("name", EVERY)
def test_one_run_at_a_time_and_a_new_one_is_cancelled(document, name):
    limit = entry(document, name)["concurrency_limit"]
    assert limit == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert (
        ConcurrencyLimitStrategy(limit["collision_strategy"]) is ConcurrencyLimitStrategy.CANCEL_NEW
    )


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_each_deployment_is_described_and_tagged(document, name):
    deployment = entry(document, name)
    assert len(deployment["description"]) > 40
    assert deployment["tags"][0] == "campaign-pipeline" and len(deployment["tags"]) == 2


def test_the_launch_review_runs_only_by_hand_and_queues_behind_another(document):
    deployment = entry(document, "review-campaign-sample")
    assert deployment["schedules"] == []
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_serve_builds_the_same_deployments_as_prefect_yaml(document):
    served = {d.name: d for d in build_deployments()}
    assert list(served) == list(DEPLOYMENTS)
    for name, deployment in served.items():
        raw = entry(document, name)
        assert deployment.flow_name == raw["flow_name"]
        path, _, function = raw["entrypoint"].rpartition(":")
        assert deployment.entrypoint == path.removesuffix(".py").replace("/", ".") + f".{function}"
        assert deployment.parameters == raw["parameters"]
        assert deployment.tags == raw["tags"]
        assert deployment.description == " ".join(raw["description"].split())
        assert deployment.concurrency_limit == 1
        assert deployment.work_pool_name is None  # served runs never go through a pool
        if name in ON_DEMAND:
            assert deployment.schedules == []
            assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
            continue
        assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"
        assert deployment.schedules[0].schedule.cron == EVERY[name][0]
        assert len(deployment.schedules) == len(raw["schedules"])
        for schedule, spec in zip(deployment.schedules, raw["schedules"], strict=True):
            assert schedule.schedule.cron == spec["cron"]
            assert schedule.schedule.timezone == "UTC"
            assert schedule.active
            assert schedule.slug == spec.get("slug")
            assert schedule.parameters == spec.get("parameters", {})


def test_results_are_kept_in_the_checkouts_data_directory():
    settings = tomllib.loads((ROOT / "prefect.toml").read_text(encoding="utf-8"))
    assert settings == {"results": {"local_storage_path": ".data/prefect-results"}}
    assert ".data/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
