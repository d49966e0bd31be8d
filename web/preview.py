"""`POST /campaigns/{id}/steps/{stepOrder}/preview`: one lead's email at one step, generated now.

A preview can spend LLM money, so the endpoint is served only when PIPELINE_API_TOKEN is set
(else it answers 404), answers only `Authorization: Bearer <token>` (else 401, before the body
is even read, so a stranger costs nothing), and at most PREVIEW_RATE_PER_MINUTE times a minute
per token (else 429 with Retry-After). Generation is the flow's own (`core.generation.preview`)
with the flows' cache; nothing is written to the database, since a preview is not a send. Each
preview is logged in one line with what it cost, never with the lead's address or the email.
"""

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.campaigns.sending_rules import describe_errors
from core.generation.config import GenerationConfig
from core.generation.due_lead import DueLead
from core.generation.generate import GenerationCache, NoCache
from core.generation.preview import (
    PreviewNotFoundError,
    PreviewRequest,
    StepPreview,
    preview_step,
)
from core.settings import Settings
from db.base import utcnow
from db.queries.preview import preview_lead
from web.body import read_body
from web.rate_limit import SlidingWindowLimit
from web.redaction import error_name
from web.webhooks import webhook_error

_log = logging.getLogger(__name__)

# A lead with a long custom note is a few KiB; the prompt keeps at most 12,000 characters of it.
MAX_PREVIEW_BODY_BYTES = 64 * 1024
MIN_TOKEN_LENGTH = 16
MAX_STEP_ORDER = 2**31 - 1  # SequenceStep.stepOrder is a PostgreSQL integer
PREVIEW_PATH = "/campaigns/{campaign_id}/steps/{step_order}/preview"

_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="preview"'}


@dataclass(frozen=True)
class PreviewAccess:
    """The endpoint's token and rate, the generation settings, and the cache previews share.

    `cache` makes one cache per preview; `campaign-pipeline web` hands in the flows' result
    storage (`tasks.generation.cache_outside_runs`), which this package cannot import itself.
    Raises ValueError for a token shorter than MIN_TOKEN_LENGTH.
    """

    token: SecretStr
    per_minute: int
    generation: GenerationConfig
    cache: Callable[[], GenerationCache] = NoCache

    def __post_init__(self) -> None:
        """Refuse a token short enough to guess, before serving."""
        if len(self.token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"PIPELINE_API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters")

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: Callable[[], GenerationCache] | None = None
    ) -> "PreviewAccess | None":
        """The preview settings, or None (not served) when PIPELINE_API_TOKEN is unset or empty."""
        token = settings.pipeline_api_token
        if token is None or not token.get_secret_value():
            return None
        return cls(
            token=token,
            per_minute=settings.preview_rate_per_minute,
            generation=GenerationConfig.from_settings(settings),
            cache=cache or NoCache,
        )

    def authorised(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries this token as a Bearer credential."""
        scheme, _, given = (authorization or "").partition(" ")
        expected = self.token.get_secret_value().encode("utf-8")
        # compare_digest takes as long however much of the token a guess gets right.
        matches = hmac.compare_digest(given.strip().encode("utf-8"), expected)
        return scheme.lower() == "bearer" and matches

    @property
    def limit_key(self) -> str:
        """The rate limit's key for this token: a digest, so the token is not kept twice."""
        return hashlib.sha256(self.token.get_secret_value().encode("utf-8")).hexdigest()[:16]


def load_preview_lead(
    sessions: sessionmaker[Session], campaign_id: str, step_order: int, wanted: PreviewRequest
) -> DueLead:
    """The request's lead at the campaign's step, read in a transaction that writes nothing."""
    with sessions() as session:
        return preview_lead(
            session,
            campaign_id=campaign_id,
            step_order=step_order,
            now=utcnow(),
            lead_id=wanted.leadId,
            inline=wanted.lead,
        )


def log_preview(preview: StepPreview) -> None:
    """The audit line of one preview: what was asked and what it cost, no address or text."""
    source = "offline" if preview.offline else "cache hit" if preview.cacheHit else "generated"
    _log.info(
        "preview of campaign %s step %d for lead %s: %s, model %s, %s; spent %d LLM calls, "
        "%d prompt + %d completion tokens, %s",
        preview.campaignId,
        preview.stepOrder,
        preview.leadId or "(inline)",
        preview.outcome,
        preview.model,
        source,
        preview.spent.llmCalls,
        preview.spent.promptTokens,
        preview.spent.completionTokens,
        "cost unknown (no price)"
        if preview.spent.costUsd is None
        else f"${preview.spent.costUsd:.6f}",
    )


def _step_order(text: str) -> int | None:
    """A path's stepOrder as the Integer column holds it, or None."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_STEP_ORDER:
        return None
    return int(text)


def preview_routes(sessions: sessionmaker[Session], access: PreviewAccess | None) -> APIRouter:
    """POST /campaigns/{id}/steps/{stepOrder}/preview; answers 404 while `access` is None."""
    router = APIRouter()
    limit = SlidingWindowLimit(access.per_minute) if access is not None else None

    @router.post(PREVIEW_PATH)
    async def preview(campaign_id: str, step_order: str, request: Request) -> JSONResponse:
        """The rendered template, the draft, the gate's verdict and the cost, for one lead."""
        if access is None or limit is None:
            return webhook_error(404, "preview not configured")
        if not access.authorised(request.headers.get("authorization")):
            _log.info("preview refused: missing or wrong bearer token")
            return webhook_error(401, "missing or wrong bearer token", _BEARER_CHALLENGE)
        wait = limit.take(access.limit_key)
        if wait is not None:
            _log.info("preview refused: over %d a minute for this token", limit.per_minute)
            return webhook_error(
                429,
                f"at most {limit.per_minute} previews a minute; try again in {wait} s",
                {"Retry-After": str(wait)},
            )
        # Read as text, not typed in the signature: FastAPI would answer a bad one before the
        # token is checked, telling a stranger something about the endpoint.
        step = _step_order(step_order)
        if step is None:
            return webhook_error(404, f"no step {step_order!r}: stepOrder is a whole number")
        body = await read_body(request, MAX_PREVIEW_BODY_BYTES)
        if body is None:
            return webhook_error(413, f"request over {MAX_PREVIEW_BODY_BYTES} bytes")
        try:
            wanted = PreviewRequest.model_validate_json(body)
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid request", "problems": describe_errors(exc)}, status_code=422
            )
        try:
            lead = await run_in_threadpool(load_preview_lead, sessions, campaign_id, step, wanted)
        except PreviewNotFoundError as exc:
            return webhook_error(404, str(exc))
        except DataError as exc:
            # An id no text column can hold (a NUL byte): no such campaign or lead, not an outage.
            _log.info("preview refused: id not storable (%s)", error_name(exc))
            return webhook_error(404, "no such campaign or lead")
        result = await preview_step(lead, access.generation, access.cache())
        log_preview(result)
        return JSONResponse(result.model_dump(mode="json"))

    return router
