"""The OpenAI Files and Batch API, as `pregenerate-upcoming-steps` uses it.

The official client's `files.create(purpose="batch")`, `batches.create/retrieve/list` and
`files.content`; API errors are raised as they come (the calling task retries), with no key,
prompt or lead data in what is logged.
"""

from dataclasses import dataclass
from datetime import datetime

from openai import AsyncOpenAI
from pydantic import SecretStr

from core.generation.llm import DEFAULT_BASE_URL
from core.generation.pregenerate import COMPLETION_WINDOW, ENDPOINT, METADATA_KEY, BatchRequest

# Looking for an unrecorded batch: how far before its row's creation the listing may stop.
LISTING_SLACK_SECONDS = 3600


@dataclass(frozen=True)
class BatchState:
    """What the API says of a batch."""

    id: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int
    error: str | None


class BatchAPI:
    """Upload, submit, find and read batches; `aclose()` when done."""

    def __init__(
        self, *, api_key: SecretStr, base_url: str | None, timeout: float, max_retries: int
    ) -> None:
        self._client = AsyncOpenAI(
            api_key=api_key.get_secret_value(),
            base_url=base_url or DEFAULT_BASE_URL,
            timeout=timeout,
            max_retries=max_retries,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def upload(self, batch_id: str, requests: list[BatchRequest]) -> str:
        """Upload the requests as one JSONL input file; its file id."""
        data = b"".join(request.line for request in requests)
        uploaded = await self._client.files.create(
            file=(f"{batch_id}.jsonl", data), purpose="batch"
        )
        return uploaded.id

    async def submit(self, batch_id: str, file_id: str) -> str:
        """Create the batch, its GenerationBatch id in the metadata; the OpenAI batch id."""
        batch = await self._client.batches.create(
            input_file_id=file_id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={METADATA_KEY: batch_id},
        )
        return batch.id

    async def find(self, batch_id: str, *, created_after: datetime) -> str | None:
        """The OpenAI id of the batch created for `batch_id`, if any; the listing (newest first)
        is read back to a little before the row was created."""
        horizon = created_after.timestamp() - LISTING_SLACK_SECONDS
        async for batch in self._client.batches.list(limit=100):
            if (batch.metadata or {}).get(METADATA_KEY) == batch_id:
                return batch.id
            if batch.created_at < horizon:
                return None
        return None

    async def state(self, openai_id: str) -> BatchState:
        """The batch's status, files and counts."""
        batch = await self._client.batches.retrieve(openai_id)
        counts = batch.request_counts
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        return BatchState(
            id=batch.id,
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            error="; ".join(f"{e.code}: {e.message}" for e in errors) or None,
        )

    async def text(self, file_id: str | None) -> str:
        """An output or error file's text ("" when there is none)."""
        if file_id is None:
            return ""
        content = await self._client.files.content(file_id)
        return content.text
