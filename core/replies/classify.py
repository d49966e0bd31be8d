"""One reply's classification: the cached answer, else the LLM's, else the rules'.

Nothing here touches the database or Prefect; the model and the cache are small Protocols the
task layer fills (generation's OpenAI client within the run's LLM slots, Prefect's result
storage).
"""

from dataclasses import replace
from datetime import date
from typing import Any, Protocol

from pydantic import ValidationError

from core.generation.llm import Completion, LLMError, OutputT
from core.generation.prompt import Message
from core.replies.intent import Classification, ClassificationMethod, IntentAnswer, ReplyIntent
from core.replies.prompt import (
    PROMPT_VERSION,
    RESPONSE_FORMAT,
    build_messages,
    classification_input_hash,
)
from core.replies.reply_text import ReplyContent
from core.replies.rules import classify_by_rules


class StructuredModel(Protocol):
    """An LLM that answers chat messages with a pydantic model (`OpenAIGenerator.complete`)."""

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        output: type[OutputT],
        response_format: dict[str, Any],
    ) -> Completion[OutputT]:
        """One structured answer; raises an LLMError subclass on failure."""
        ...


class ClassificationCache(Protocol):
    """Finished classifications by content key, so a re-read reply is never paid for twice."""

    async def get(self, key: str) -> Classification | None:
        """The stored classification, or None."""
        ...

    async def put(self, key: str, classification: Classification) -> None:
        """Store a finished classification."""
        ...


async def classify_reply(
    reply: ReplyContent | None,
    *,
    received: date,
    llm: StructuredModel | None,
    cache: ClassificationCache,
    model: str,
) -> Classification:
    """The reply's intent: from the cache, else the LLM, else (no LLM, no text, or a failed
    call, which the client has already retried) the rules, with the LLM's error as the note."""
    if llm is None or reply is None or not reply.text:
        return classify_by_rules(reply, received=received)
    key = classification_input_hash(reply, received=received, model=model)
    cached = await cache.get(key)
    if cached is not None:
        return replace(cached, cache_hit=True)
    messages = build_messages(reply, received=received)
    try:
        done = await llm.complete(
            messages, model=model, output=IntentAnswer, response_format=RESPONSE_FORMAT
        )
        intent = ReplyIntent.from_answer(done.output, received=received)
    except LLMError as exc:
        return replace(classify_by_rules(reply, received=received), note=f"LLM: {exc}")
    except ValidationError:
        # Its text quotes the answer, which may quote the reply: only the fact is kept.
        note = "LLM: answer out of bounds (confidence, summary or names)"
        return replace(classify_by_rules(reply, received=received), note=note)
    classification = Classification(
        intent=intent,
        method=ClassificationMethod.llm,
        model=done.model,
        prompt_version=PROMPT_VERSION,
        input_hash=key,
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        latency_ms=done.latency_ms,
        cost_usd=done.cost_usd,
    )
    await cache.put(key, classification)
    return classification
