"""What flow runs left on the Prefect server: their artifacts, their logs and their events.

Always read page by page, and filtered by the runs when any are named. The session's one
harness server holds the records of every flow test before this one, and a read without a limit
returns only the server's default page of 200, so a run's own artifact can fall off it once the
suite has grown.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, Log
from prefect.logging.handlers import APILogHandler

PAGE = 200
EVENTS = 50  # the most events /events/filter answers at once

T = TypeVar("T")


async def _every_page(read: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    """Every record `read(offset)` pages through."""
    found: list[T] = []
    while page := await read(len(found)):
        found += page
        if len(page) < PAGE:
            break
    return found


async def run_artifacts(*run_ids: UUID) -> list[Artifact]:
    """The artifacts of these runs; with none named, of every run on the server."""
    only = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=list(run_ids)))
    async with get_client() as client:
        return await _every_page(
            lambda offset: client.read_artifacts(
                artifact_filter=only if run_ids else None, limit=PAGE, offset=offset
            )
        )


async def run_logs(*run_ids: UUID) -> list[Log]:
    """The logs of these runs (every run's with none named), once the handler has shipped them."""
    await APILogHandler.aflush()
    only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(run_ids)))
    async with get_client() as client:
        return await _every_page(
            lambda offset: client.read_logs(
                log_filter=only if run_ids else None, limit=PAGE, offset=offset
            )
        )


async def run_log_messages(run_id: UUID) -> list[str]:
    """One run's log messages."""
    return [log.message for log in await run_logs(run_id)]


async def shipped_log_messages(
    run_id: UUID, *, until: Callable[[list[str]], bool], timeout: float = 10.0
) -> list[str]:
    """One run's log messages, for a run in another process: it ships its last logs after its
    final state, so they are read again until `until` holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not until(messages := await run_log_messages(run_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return messages


async def run_with_artifacts(
    flow: Callable[..., Awaitable[Any]], **params: Any
) -> tuple[Any, dict[str, Artifact], UUID]:
    """Run a flow; its return value, its artifacts by key and its run id."""
    state = await flow(**params, return_state=True)
    result = await state.aresult()
    run_id = state.state_details.flow_run_id
    return result, {a.key: a for a in await run_artifacts(run_id) if a.key}, run_id


async def emitted_events(
    event: str, *, resource_ids: set[str], expected: int, within: float = 20.0
) -> list[dict[str, Any]]:
    """The events named `event` about these resources, once `expected` of them have reached the
    server's store (events travel on their own socket and are stored in the background), or
    what is there after `within` seconds."""
    deadline = time.monotonic() + within
    query = {"filter": {"event": {"name": [event]}, "resource": {"id": sorted(resource_ids)}}}
    async with get_client() as client:
        while True:
            answer = await client._client.post("/events/filter", json=query | {"limit": EVENTS})
            answer.raise_for_status()
            found: list[dict[str, Any]] = answer.json()["events"]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.25)
