"""LLM clients behind the `Generator` protocol: OpenAI Chat Completions, or the offline template."""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, SecretStr

from core.generation.draft import EmailDraft
from core.generation.pricing import DEFAULT_PRICES, ModelPrice, token_cost
from core.generation.prompt import Message, extract_draft
from core.statuses import Pricing

TEMPLATE_MODEL = "template"
# Explicit, so the SDK never falls back to reading OPENAI_BASE_URL itself.
DEFAULT_BASE_URL = "https://api.openai.com/v1"

OutputT = TypeVar("OutputT", bound=BaseModel)


def structured_format(output: type[BaseModel]) -> dict[str, Any]:
    """The strict JSON-schema response format of a pydantic model (named after the model).

    The schema is the one the SDK's own `parse()` sends (`to_strict_json_schema`): the API
    refuses pydantic's plain schema when a `$ref` has siblings, as an enum field with a
    description does.
    """
    return {
        "type": "json_schema",
        "json_schema": {
            "name": output.__name__,
            "strict": True,
            "schema": to_strict_json_schema(output),
        },
    }


# The strict structured-output format, computed once: the SDK's parse() would rebuild it on
# every call, which doubled the client's CPU per request (about 270 against 510 req/s here).
RESPONSE_FORMAT: dict[str, Any] = structured_format(EmailDraft)

# Statuses the client retries itself; seeing one here means the retries ran out.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


class LLMError(Exception):
    """Base of the generation errors; messages never carry keys, prompts or lead data."""

    def __init__(self, message: str, *, attempts: int, status_code: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status_code = status_code


class LLMTransientError(LLMError):
    """Gave up after retries (429, 5xx, timeout, connection): worth trying again later."""


class LLMRejectedError(LLMError):
    """The API refused the request (400/401/403/404/422…): retrying the same call won't help."""


class LLMOutputError(LLMError):
    """A response arrived but holds no usable output (bad JSON, wrong shape, refusal…)."""


@dataclass(frozen=True, slots=True)
class Completion(Generic[OutputT]):
    """One structured answer of the model and what it cost."""

    output: OutputT
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: float | None  # None: the model has no price (core.generation.pricing)
    attempts: int
    cached_tokens: int = 0
    cached_cost_usd: float | None = 0.0
    pricing: Pricing = Pricing.standard


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated draft and what it cost."""

    draft: EmailDraft
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: float | None  # None: the model has no price (core.generation.pricing)
    attempts: int
    # Of prompt_tokens, those read from the prompt cache, and the part of cost_usd they cost;
    # and the rate the call was billed at.
    cached_tokens: int = 0
    cached_cost_usd: float | None = 0.0
    pricing: Pricing = Pricing.standard


class Generator(Protocol):
    """Anything that turns `build_messages` output into a draft."""

    async def generate(self, messages: list[Message], *, model: str) -> Generation:
        """Generate one draft; raises an LLMError subclass on failure."""
        ...


class TemplateGenerator:
    """Offline stand-in when no API key is set: returns the rendered draft unchanged."""

    async def generate(self, messages: list[Message], *, model: str) -> Generation:
        """The draft carried in the messages, as model `template`, free and instant."""
        draft = extract_draft(messages)
        if draft is None:
            raise LLMOutputError("messages carry no <draft_subject>/<draft_body> block", attempts=0)
        return Generation(
            draft=draft,
            model=TEMPLATE_MODEL,
            prompt_tokens=0,
            completion_tokens=0,
            latency_ms=0,
            cost_usd=0.0,
            attempts=0,
        )

    async def aclose(self) -> None:
        """Nothing to close; here so every generator a config opens can be closed alike."""


class OpenAIGenerator:
    """OpenAI (or compatible) Chat Completions with a strict JSON-schema response format.

    Wire shape, which the fake test server relies on: `POST {base_url}/chat/completions` with
    JSON `{"model", "messages", "response_format": {"type": "json_schema",
    "json_schema": {"name": "EmailDraft", "strict": true, "schema": {…}}}}` and a Bearer key;
    the answer's `choices[0].message.content` must be the JSON of an EmailDraft (of the model
    `complete` names, e.g. a reply's `IntentAnswer`), and `usage` gives token counts. Each
    attempt carries the `x-stainless-retry-count` header (0, 1, …).

    Retries are the openai client's own: `max_retries` more attempts after the first on
    408/409/429/5xx, timeouts and connection errors, exponential backoff (0.5 s doubling up to
    8 s, minus up to 25 % jitter), honouring `Retry-After`/`retry-after-ms` up to 120 s. A
    longer `Retry-After`, a 400-class error or unusable output is not retried.

    The underlying HTTP pool belongs to the event loop that first uses it: create one
    generator per loop and `aclose()` it when done.
    """

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_completion_tokens: int | None = None,
        service_tier: str | None = None,
        prices: Mapping[str, ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise ValueError("an OpenAI API key is required; use TemplateGenerator without one")
        self._client = AsyncOpenAI(
            api_key=key,
            base_url=base_url or DEFAULT_BASE_URL,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._max_completion_tokens = max_completion_tokens
        # `flex`: half price, slower and sometimes refused (429) when capacity is short.
        self._service_tier = service_tier
        self._prices = prices

    def __repr__(self) -> str:
        return f"OpenAIGenerator(base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def generate(self, messages: list[Message], *, model: str) -> Generation:
        """One call; raises LLMTransientError, LLMRejectedError or LLMOutputError."""
        done = await self.complete(
            messages, model=model, output=EmailDraft, response_format=RESPONSE_FORMAT
        )
        return Generation(
            draft=done.output,
            model=done.model,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            latency_ms=done.latency_ms,
            cost_usd=done.cost_usd,
            attempts=done.attempts,
            cached_tokens=done.cached_tokens,
            cached_cost_usd=done.cached_cost_usd,
            pricing=done.pricing,
        )

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        output: type[OutputT],
        response_format: dict[str, Any],
    ) -> Completion[OutputT]:
        """One call answered as `output` (`response_format` is its `structured_format`);
        raises LLMTransientError, LLMRejectedError or LLMOutputError."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "response_format": response_format,
        }
        if self._max_completion_tokens is not None:
            body["max_completion_tokens"] = self._max_completion_tokens
        if self._service_tier is not None:
            body["service_tier"] = self._service_tier
        started = time.monotonic()
        error: LLMError | None = None
        try:
            # The client's own POST (its retries, backoff, auth, timeouts and errors), without
            # create()'s walk of the messages against the SDK's TypedDicts or its build of a
            # ChatCompletion: 0.34 and 0.2 ms of CPU per call that change nothing here, where
            # the body is plain JSON and only a few fields of the answer are read.
            response = await self._client.post(
                "/chat/completions", cast_to=httpx2.Response, body=body
            )
        except openai.APIError as exc:
            error = _classify(exc)
        # Raised outside the except block so the openai error (its message can echo a masked
        # key or the input) is not even kept as __context__.
        if error is not None:
            raise error
        latency_ms = round((time.monotonic() - started) * 1000)
        # The answered attempt carries its retry number (0 for the first try).
        attempts = _attempts(response.request)
        result = read_completion(
            response.content,
            output,
            requested_model=model,
            attempts=attempts,
            latency_ms=latency_ms,
            prices=self._prices,
        )
        if isinstance(result, LLMError):
            raise result
        return result


class _AnswerMessage(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _AnswerMessage
    finish_reason: str | None = None


class _PromptTokensDetails(BaseModel):
    cached_tokens: int | None = None


class _Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptTokensDetails | None = None


class _ChatCompletion(BaseModel):
    """The fields of a Chat Completions answer that are read; the rest is ignored."""

    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None
    service_tier: str | None = None


def read_completion(
    completion: bytes | Mapping[str, Any],
    output: type[OutputT],
    *,
    requested_model: str,
    attempts: int,
    latency_ms: int,
    prices: Mapping[str, ModelPrice],
    pricing: Pricing | None = None,
) -> Completion[OutputT] | LLMError:
    """A chat completion (a response's bytes, or a Batch API output line's body) as a
    Completion, priced at `pricing` (by default the service tier the API reports), or what is
    wrong with it."""
    try:
        if isinstance(completion, bytes):
            answer = _ChatCompletion.model_validate_json(completion)
        else:
            answer = _ChatCompletion.model_validate(completion)
        choice = answer.choices[0]
    except (pydantic.ValidationError, IndexError):
        # e.g. a 200 whose body is not JSON, or JSON that is no chat completion.
        return LLMOutputError("response is not a chat completion", attempts=attempts)
    message = choice.message
    if choice.finish_reason == "length":
        return LLMOutputError("output cut off at the token limit", attempts=attempts)
    if choice.finish_reason == "content_filter":
        return LLMOutputError("output blocked by a content filter", attempts=attempts)
    if message.refusal:
        return LLMOutputError("the model refused", attempts=attempts)
    try:
        parsed = output.model_validate_json(message.content or "")
    except pydantic.ValidationError:
        # ValidationError's text quotes the output, which may contain lead data: drop it.
        return LLMOutputError(f"output is not a valid {output.__name__}", attempts=attempts)
    usage = answer.usage or _Usage()
    details = usage.prompt_tokens_details
    cached_tokens = (details.cached_tokens or 0) if details else 0
    # The API reports the snapshot that answered (e.g. gpt-4o-mini-2024-07-18); keep that.
    used_model = answer.model or requested_model
    if pricing is None:
        pricing = Pricing.flex if answer.service_tier == "flex" else Pricing.standard
    cost = partial(
        token_cost, used_model, cached_tokens=cached_tokens, pricing=pricing, prices=prices
    )
    return Completion(
        output=parsed,
        model=used_model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency_ms=latency_ms,
        cost_usd=cost(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens),
        attempts=attempts,
        cached_tokens=cached_tokens,
        # The cached tokens alone: a prompt of nothing else, and no output.
        cached_cost_usd=cost(prompt_tokens=cached_tokens, completion_tokens=0),
        pricing=pricing,
    )


def _classify(exc: openai.APIError) -> LLMError:
    attempts = _attempts_from_request(exc)
    if isinstance(exc, openai.APITimeoutError):
        return LLMTransientError(f"timed out after {attempts} attempt(s)", attempts=attempts)
    if isinstance(exc, openai.APIConnectionError):
        return LLMTransientError(f"no connection after {attempts} attempt(s)", attempts=attempts)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = f"HTTP {status}{_error_code(exc)} after {attempts} attempt(s)"
        if status in _TRANSIENT_STATUSES or status >= 500:
            return LLMTransientError(detail, attempts=attempts, status_code=status)
        return LLMRejectedError(detail, attempts=attempts, status_code=status)
    return LLMOutputError("response could not be read", attempts=attempts)


def _attempts_from_request(exc: openai.APIError) -> int:
    # The failing request is the last attempt.
    try:
        return _attempts(exc.request)
    except (AttributeError, RuntimeError):
        return 1


def _attempts(request: httpx2.Request) -> int:
    # The client stamps every attempt with its retry number.
    try:
        return int(request.headers.get("x-stainless-retry-count", "0")) + 1
    except ValueError:
        return 1


def _error_code(exc: openai.APIStatusError) -> str:
    # Only the short machine code: the human message can echo a (masked) key or the input.
    code = exc.code or exc.type
    if not code or not code.replace("_", "").replace("-", "").isalnum() or len(code) > 64:
        return ""
    return f" ({code})"
