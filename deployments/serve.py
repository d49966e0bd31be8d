"""The deployments of prefect.yaml, served by one long-lived process (`campaign-pipeline serve`).

The alternative to a work pool and a worker: the same names, schedules, parameters, tags,
descriptions and concurrency limits, read from prefect.yaml, with each run started as a
subprocess of the serving process, in its working directory (so start it in the checkout, like
every command that reads `.env`). They are the same deployments (same flow and deployment
names) as `prefect deploy --all` creates: serving takes them off the work pool, deploying puts
them back on it, so run one or the other, not both; whichever registered last owns them.
"""

import importlib

from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Schedule

from deployments.spec import CronSpec, DeploymentSpec, PrefectYamlError, read_deployments


def load_flow(spec: DeploymentSpec) -> Flow:
    """Import the deployment's flow from the installed package and check its name."""
    module = importlib.import_module(spec.module)
    flow = getattr(module, spec.function, None)
    if not isinstance(flow, Flow):
        raise PrefectYamlError(f"{spec.entrypoint} is not a Prefect flow")
    if flow.name != spec.flow_name:
        raise PrefectYamlError(
            f"{spec.entrypoint} is the flow {flow.name!r}, but prefect.yaml says {spec.flow_name!r}"
        )
    return flow


def schedule(spec: CronSpec) -> Schedule:
    """A prefect.yaml cron schedule as a Prefect schedule."""
    return Cron(
        spec.cron,
        timezone=spec.timezone,
        active=spec.active,
        parameters=spec.parameters,
        slug=spec.slug,
    )


def concurrency(spec: DeploymentSpec) -> ConcurrencyLimitConfig:
    """The deployment's concurrency limit and what happens to a run that finds it taken."""
    return ConcurrencyLimitConfig(
        limit=spec.concurrency_limit,
        collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy),
    )


def to_deployment(spec: DeploymentSpec, *, paused: bool | None = None) -> RunnerDeployment:
    """One prefect.yaml deployment, ready to serve."""
    deployment = load_flow(spec).to_deployment(
        name=spec.name,
        description=spec.description,
        tags=list(spec.tags),
        parameters=spec.parameters,
        schedules=[schedule(cron) for cron in spec.schedules],
        concurrency_limit=concurrency(spec),
        paused=paused,
        # `flows.x.function`, imported from the installed package: independent of the
        # directory `serve` runs in, and of the `path` a deployment made by `prefect deploy`
        # keeps (None, which a file entrypoint would be looked up under).
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    if not isinstance(deployment, RunnerDeployment):
        # Prefect dispatches on the caller: inside an event loop the call is a coroutine.
        raise TypeError("to_deployment is synchronous: call it outside an event loop")
    # Said explicitly, so serving a deployment `prefect deploy` put on the work pool takes it off
    # the pool: the API clears a deployment's pool only when asked to, and otherwise a worker
    # would still pick up its runs (and run them without the pull step).
    deployment.work_pool_name = None
    return deployment


def build_deployments(
    specs: list[DeploymentSpec] | None = None, *, paused: bool | None = None
) -> list[RunnerDeployment]:
    """Every deployment of prefect.yaml (or of `specs`), ready to serve."""
    return [to_deployment(spec, paused=paused) for spec in specs or read_deployments()]


def serve_deployments(deployments: list[RunnerDeployment], *, limit: int | None = None) -> None:
    """Serve until Ctrl+C or SIGTERM; the schedules are paused on the way out (and resumed
    when the deployments are served or deployed again), so no runs pile up meanwhile."""
    serve(*deployments, limit=limit, print_starting_message=False)
