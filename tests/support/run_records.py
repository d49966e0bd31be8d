"""What one flow run left on the Prefect server: its artifacts and its log lines.

Always filtered by the run and read page by page. The session's one harness server holds the
records of every flow test before this one, and an unfiltered read returns only the server's
default page of 200, so a run's own artifact can fall off it once the suite has grown.
"""

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact
from prefect.logging.handlers import APILogHandler

PAGE = 200


async def run_artifacts(run_id: UUID) -> dict[str, Artifact]:
    """The run's artifacts by key."""
    only_this_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    artifacts: list[Artifact] = []
    async with get_client() as client:
        while page := await client.read_artifacts(
            artifact_filter=only_this_run, limit=PAGE, offset=len(artifacts)
        ):
            artifacts += page
    return {a.key: a for a in artifacts if a.key}


async def run_log_messages(run_id: UUID) -> list[str]:
    """The run's log messages, once the handler has shipped what it buffered."""
    await APILogHandler.aflush()
    only_this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
    messages: list[str] = []
    async with get_client() as client:
        while page := await client.read_logs(
            log_filter=only_this_run, limit=PAGE, offset=len(messages)
        ):
            messages += [log.message for log in page]
    return messages


async def run_with_artifacts(
    flow: Callable[..., Awaitable[Any]], **params: Any
) -> tuple[Any, dict[str, Artifact], UUID]:
    """Run a flow; its return value, its artifacts by key and its run id."""
    state = await flow(**params, return_state=True)
    result = await state.aresult()
    run_id = state.state_details.flow_run_id
    return result, await run_artifacts(run_id), run_id
