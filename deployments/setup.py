"""`campaign-pipeline prefect setup`: what the deployments need on the Prefect server.

The work pool of prefect.yaml (type `process`) and the limits of deployments/limits.py; each
created when missing and reported, so running it twice changes nothing the second time. It also
says where finished generations are kept, since a Retry only reuses them from there.
"""

from pathlib import Path

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings
from prefect.workers.process import ProcessWorker

from core.settings import Settings
from deployments.limits import SetupResult, ensure_limits
from deployments.spec import read_deployments, work_pool_name

POOL_TYPE = ProcessWorker.type


class PrefectAPIError(RuntimeError):
    """The Prefect API is not configured, or does not answer."""


def api_url() -> str:
    """PREFECT_API_URL; without it Prefect would start a throwaway server no worker sees."""
    url = get_current_settings().api.url
    if not url:
        raise PrefectAPIError(
            "PREFECT_API_URL is not set: start a server (`prefect server start`) and point at"
            " it (`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`)"
        )
    return url


async def check_api(client: PrefectClient) -> None:
    """Fail with one readable sentence unless the API answers."""
    url = api_url()
    problem = await client.api_healthcheck()
    if problem is not None:
        reason = str(problem) or type(problem).__name__
        raise PrefectAPIError(f"cannot reach the Prefect API at {url}: {reason}")


async def require_api() -> None:
    """Fail with one readable sentence unless PREFECT_API_URL is set and answers."""
    api_url()
    async with get_client() as client:
        await check_api(client)


async def ensure_work_pool(client: PrefectClient, name: str) -> SetupResult:
    """The work pool, of type process, created with Prefect's default job template if missing."""
    subject = f"work pool {name!r}"
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=POOL_TYPE,
                    description="campaign-pipeline: flow runs as subprocesses of a worker",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:  # created by someone else meanwhile
            return SetupResult(subject, "unchanged", f"type {POOL_TYPE}, already there")
        return SetupResult(subject, "created", f"type {POOL_TYPE}")
    if pool.type != POOL_TYPE:
        raise PrefectAPIError(
            f"work pool {name!r} exists with type {pool.type!r}; prefect.yaml needs a"
            f" {POOL_TYPE!r} pool: delete it (`prefect work-pool delete {name}`) or rename the"
            " pool in prefect.yaml"
        )
    paused = "; it is PAUSED: resume it with `prefect work-pool resume`" if pool.is_paused else ""
    return SetupResult(subject, "unchanged", f"type {POOL_TYPE}, already there{paused}")


async def result_storage(client: PrefectClient) -> SetupResult:
    """Where generations are cached: the settings' block, the server's default, or a folder."""
    settings = get_current_settings().results
    server_block = None
    if not settings.default_storage_block:
        server = await client.read_server_default_result_storage()
        server_block = server.default_result_storage_block_id
    if settings.default_storage_block:
        where = f"block {settings.default_storage_block} (PREFECT_DEFAULT_RESULT_STORAGE_BLOCK)"
    elif server_block:
        where = f"block {server_block} (the server's default result storage)"
    else:
        path = Path(settings.local_storage_path).expanduser().resolve()
        where = (
            f"{path} (local: shared only by runs on this machine; see"
            " PREFECT_DEFAULT_RESULT_STORAGE_BLOCK)"
        )
    return SetupResult("generation results", "noted", f"kept in {where}")


async def setup(
    settings: Settings, *, llm_per_minute: int | None = None, llm_burst: int | None = None
) -> list[SetupResult]:
    """Make the Prefect server ready for `prefect deploy --all`; what was done, in order."""
    pool = work_pool_name(read_deployments())
    url = api_url()
    async with get_client() as client:
        await check_api(client)
        try:
            outcomes = [await ensure_work_pool(client, pool)]
            outcomes += await ensure_limits(
                client, settings, llm_per_minute=llm_per_minute, llm_burst=llm_burst
            )
            outcomes.append(await result_storage(client))
        except httpx.HTTPError as exc:  # includes Prefect's own HTTP status errors
            raise PrefectAPIError(f"the Prefect API at {url} failed: {exc}") from None
    return outcomes
