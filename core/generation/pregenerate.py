"""Writing drafts ahead through the Batch API: the request lines, their split, their answers.

A lead whose next step is due between `PREGENERATE_MIN_LEAD_HOURS` and `PREGENERATE_MAX_DAYS`
ahead gets exactly the request the synchronous path would send (same messages, model and
response format, so the same content hash describes both). Its `custom_id` is derived from the
lead, the step and that hash, so the same input is never submitted twice, while a lead whose
data changed gets a new request. Answers pass the same quality gate as the synchronous path;
one that fails it, a per-request error, or an expired batch leaves the lead to be generated
synchronously when it comes due.
"""

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from core.generation.draft import EmailDraft
from core.generation.gate import check_draft, normalize_draft
from core.generation.generate import Prepared
from core.generation.llm import RESPONSE_FORMAT, LLMError, read_completion
from core.generation.pricing import ModelPrice
from core.statuses import BatchRequestStatus, GenerationBatchStatus, Pricing

ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
COMPLETION_WINDOW: Literal["24h"] = "24h"
# The Batch API's limits per input file (https://platform.openai.com/docs/guides/batch).
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
# The batch metadata key naming the GenerationBatch row, so an unrecorded batch can be adopted.
METADATA_KEY = "generation_batch"

FINAL_STATUSES = {
    "completed": GenerationBatchStatus.completed,
    "expired": GenerationBatchStatus.expired,
    "failed": GenerationBatchStatus.failed,
    "cancelled": GenerationBatchStatus.cancelled,
}


def upcoming_window(
    now: datetime, *, min_lead_hours: float, max_days: float
) -> tuple[datetime, datetime]:
    """The due dates worth writing ahead: late enough for a 24-hour batch, soon enough that the
    lead's data is unlikely to change first."""
    return now + timedelta(hours=min_lead_hours), now + timedelta(days=max_days)


# A draft's step falls due at most PREGENERATE_MAX_DAYS after its request, so a draft stored
# longer ago than that plus this margin belongs to a lead that has been due for a day or more
# without using it (a paused lead or campaign, a long hold): its input has likely moved on, and
# a draft kept for a lead that may never come back would stay forever.
RETIRE_MARGIN = timedelta(days=1)
# How every draft written ahead and superseded unused says why (`GeneratedMessage.statusReason`).
RETIRED = "retired unused"
SUPERSEDED_WHEN_DUE = (
    "superseded when its lead came due: the lead's data, step, instructions or thread had"
    " changed since it was written, or it failed the quality gate again; written anew"
)


def retire_before(now: datetime, *, max_days: float) -> datetime:
    """Drafts stored before this have outlived the window they were written for."""
    return now - timedelta(days=max_days) - RETIRE_MARGIN


def outlived_reason(max_days: float) -> str:
    """Why a draft older than `retire_before` is retired, in an operator's words."""
    return (
        f"{RETIRED}: stored more than {max_days:g} days (PREGENERATE_MAX_DAYS) + 1 day ago,"
        " so its step has been due for a day or more without it"
    )


def custom_id(campaign_lead_id: str, step_id: str, input_hash: str) -> str:
    """The request's stable id: one per lead, step and content hash (at most 64 characters)."""
    digest = hashlib.sha256(f"{campaign_lead_id}\0{step_id}\0{input_hash}".encode()).hexdigest()
    return f"pg-{digest[:48]}"


@dataclass(frozen=True)
class BatchRequest:
    """One lead's request, as recorded and as uploaded."""

    customId: str
    campaignLeadId: str
    stepId: str
    inputHash: str
    line: bytes  # the JSONL line, newline included


def batch_request(prepared: Prepared, *, model: str) -> BatchRequest:
    """The request the synchronous path would send for this lead, as a Batch API line."""
    assert prepared.lead.stepId is not None  # prepare() holds a lead without its step
    key = custom_id(prepared.lead.campaignLeadId, prepared.lead.stepId, prepared.input_hash)
    body = {"model": model, "messages": prepared.messages(), "response_format": RESPONSE_FORMAT}
    line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
    encoded = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    return BatchRequest(
        key, prepared.lead.campaignLeadId, prepared.lead.stepId, prepared.input_hash, encoded
    )


def split_requests(
    requests: list[BatchRequest], *, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES
) -> Iterator[list[BatchRequest]]:
    """The requests in input files within the API's limits, in order."""
    chunk: list[BatchRequest] = []
    size = 0
    for request in requests:
        if chunk and (len(chunk) >= max_requests or size + len(request.line) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(request)
        size += len(request.line)
    if chunk:
        yield chunk


@dataclass(frozen=True)
class BatchAnswer:
    """One line of a batch's output or error file: the completion body, or why there is none."""

    customId: str
    body: dict[str, Any] | None
    error: str | None


def read_result_lines(text: str) -> tuple[list[BatchAnswer], int]:
    """The answers in an output or error file, and how many lines could not be read at all."""
    answers: list[BatchAnswer] = []
    unreadable = 0
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            key = line["custom_id"]
        except (ValueError, TypeError, KeyError):
            unreadable += 1
            continue
        response = line.get("response") or {}
        error = line.get("error")
        status = response.get("status_code")
        if error or status != 200 or not isinstance(response.get("body"), dict):
            code = (error or {}).get("code") if isinstance(error, dict) else None
            answers.append(
                BatchAnswer(str(key), None, f"batch request failed: {code or f'HTTP {status}'}")
            )
        else:
            answers.append(BatchAnswer(str(key), response["body"], None))
    return answers, unreadable


@dataclass(frozen=True)
class DraftAhead:
    """A gated draft to store as the step's `pregenerated` message."""

    subject: str
    body: str
    model: str
    promptTokens: int
    cachedTokens: int
    completionTokens: int
    costUsd: float | None  # None: the batch's model has no price
    cachedCostUsd: float | None
    # The step variant the draft was written in, as the synchronous path records it.
    variantKey: str | None


def judge_answer(
    prepared: Prepared, body: Mapping[str, Any], *, model: str, prices: Mapping[str, ModelPrice]
) -> DraftAhead | tuple[BatchRequestStatus, str]:
    """A passing answer as a draft to store, or the request's status and why."""
    done = read_completion(
        dict(body),
        EmailDraft,
        requested_model=model,
        attempts=1,
        latency_ms=0,
        prices=prices,
        pricing=Pricing.batch,
    )
    if isinstance(done, LLMError):
        return BatchRequestStatus.failed, f"LLM: {done}"
    draft = normalize_draft(done.output)
    problems = check_draft(draft, rendered=prepared.trusted, rules=prepared.rules)
    if problems:
        return BatchRequestStatus.rejected, "quality gate: " + "; ".join(problems)
    return DraftAhead(
        subject=draft.subject,
        body=draft.body,
        model=done.model,
        promptTokens=done.prompt_tokens,
        cachedTokens=done.cached_tokens,
        completionTokens=done.completion_tokens,
        costUsd=done.cost_usd,
        cachedCostUsd=done.cached_cost_usd,
        variantKey=prepared.lead.variantKey,
    )
