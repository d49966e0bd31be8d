"""Classifying a chunk's new replies with the LLM, and telling automations who wants to talk.

Both run inside the ingestion task (`tasks.engagement.ingest_chunk`), so the engagement flow and
delivery's replies-first read (`tasks.replies_first`) classify and act the same way. The LLM is
generation's: the same client, retries, slots, rate limit and result storage; the answers are
cached under their own prefix by a hash of the reply's text, the day it arrived, the model and
the prompt.
"""

import asyncio
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event
from prefect.results import get_result_store
from sqlalchemy.orm import Session

from core.engagement.events import NormalisedEvent
from core.generation.llm import Completion, OpenAIGenerator, OutputT
from core.generation.prompt import Message
from core.replies.classify import classify_reply
from core.replies.config import ReplyIntentConfig
from core.replies.intent import Classification
from db.engine import DatabaseConfig
from db.queries.engagement import CLASSIFIED_TYPES, new_matched_keys
from db.queries.replies import Interest
from tasks.database import in_transaction
from tasks.generation import LLMSlots, StoredAnswers
from tasks.llm_loop import on_llm_loop

CACHE_PREFIX = "reply-intent-"
INTERESTED_EVENT = "campaign-pipeline.lead.interested"


class _SlottedModel:
    """Generation's OpenAI client, each call within the run's LLM slots and rate limit."""

    def __init__(self, client: OpenAIGenerator, slots: LLMSlots) -> None:
        self._client = client
        self._slots = slots

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        output: type[OutputT],
        response_format: dict[str, Any],
    ) -> Completion[OutputT]:
        return await self._slots.call(
            lambda: self._client.complete(
                messages, model=model, output=output, response_format=response_format
            )
        )


async def classify_new_replies(
    database: DatabaseConfig, config: ReplyIntentConfig, events: list[NormalisedEvent]
) -> dict[str, Classification]:
    """The LLM's classification of each reply in `events` that ingesting them would record now
    (matched to a send, never ingested), by dedupe key. Empty without an API key: the rules
    classify every reply as it is recorded.

    A reply to no send of ours, or one already acted on, is never sent to the LLM: re-reading a
    folder costs nothing, and mail that is not an answer to us is nobody's business.
    """
    key = config.llm.api_key
    replies = [e for e in events if e.type in CLASSIFIED_TYPES and e.reply and e.reply.text]
    if key is None or not replies:
        return {}

    def new_keys(session: Session) -> set[str]:
        return new_matched_keys(session, replies)

    fresh = await in_transaction(database, new_keys, rollback=True)
    todo = [event for event in replies if event.dedupe_key() in fresh]
    if not todo:
        return {}
    client = OpenAIGenerator(
        api_key=key,
        base_url=config.llm.base_url,
        timeout=config.llm.timeout_seconds,
        max_retries=config.llm.max_retries,
    )
    model = _SlottedModel(client, LLMSlots(config.llm))
    cache = StoredAnswers(get_result_store(), prefix=CACHE_PREFIX, kind=Classification)
    try:
        found = await asyncio.gather(
            *(
                classify_reply(
                    event.reply,
                    received=event.occurred_at.date(),
                    llm=model,
                    cache=cache,
                    model=config.llm.model,
                )
                for event in todo
            )
        )
    finally:
        await on_llm_loop(client.aclose)
    failed = [c.note for c in found if c.note]
    if failed:
        # Notes name the error (status, attempts), never the reply.
        get_run_logger().warning(
            "%d of %d replies classified by the rules instead of the LLM: %s",
            len(failed),
            len(found),
            failed[0],
        )
    return {event.dedupe_key(): c for event, c in zip(todo, found, strict=True)}


def announce_interest(interested: list[Interest]) -> None:
    """One `campaign-pipeline.lead.interested` event per lead who wants to talk, once its reply
    is committed; an automation turns it into a notification (README)."""
    for lead in interested:
        emit_event(
            event=INTERESTED_EVENT,
            resource={"prefect.resource.id": f"campaign-pipeline.lead.{lead.lead_id}"},
            related=[
                {
                    "prefect.resource.id": f"campaign-pipeline.campaign.{lead.campaign_id}",
                    "prefect.resource.role": "campaign",
                }
            ],
            payload={
                "campaign_id": lead.campaign_id,
                "lead_id": lead.lead_id,
                "intent": lead.intent,
                "summary": lead.summary,
            },
        )
