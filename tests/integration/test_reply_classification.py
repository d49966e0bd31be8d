"""Reply classification through the LLM path: the official `openai` client over real HTTP to the
fake OpenAI server, answers cached in a real Prefect result store, faults falling back to the
rules. The whole corpus, and what the prompt may and may not carry."""

import asyncio
from datetime import date

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from core.engagement.events import NormalisedEvent
from core.engagement.inbound import classify_message
from core.generation.llm import OpenAIGenerator
from core.replies.classify import classify_reply
from core.replies.intent import Classification, ClassificationMethod, Intent
from core.replies.prompt import PROMPT_VERSION
from core.replies.reply_text import ReplyContent
from tasks.generation import StoredAnswers
from tasks.replies import CACHE_PREFIX
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import Fault, user_text
from tests.support.reply_corpus import RECEIVED, CorpusReply, corpus_responder, load_corpus

KEY = "sk-sentinel-KEY-0123456789"
MODEL = "gpt-4o-mini"
CORPUS = load_corpus()


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(responder=corpus_responder(CORPUS)) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(server):
    server.reset()
    server.configure(retry_after="0.05")


@pytest.fixture
def cache(tmp_path) -> StoredAnswers[Classification]:
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "results")))
    return StoredAnswers(store, prefix=CACHE_PREFIX, kind=Classification)


def classify_all(
    server,
    cache,
    replies: list[ReplyContent | None],
    *,
    retries: int = 2,
    received: date = RECEIVED,
):
    async def run() -> list[Classification]:
        client = OpenAIGenerator(
            api_key=KEY, base_url=server.base_url, max_retries=retries, timeout=5.0
        )
        try:
            return list(
                await asyncio.gather(
                    *(
                        classify_reply(
                            reply, received=received, llm=client, cache=cache, model=MODEL
                        )
                        for reply in replies
                    )
                )
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def _content(reply: CorpusReply) -> ReplyContent | None:
    event = classify_message(reply.raw, source="corpus", line=1)
    assert isinstance(event, NormalisedEvent)
    return event.reply


def test_the_corpus_through_the_llm(server, cache):
    found = classify_all(server, cache, [_content(reply) for reply in CORPUS])
    for reply, classification in zip(CORPUS, found, strict=True):
        expected = reply.answer()
        checked = classification.intent
        assert classification.method is ClassificationMethod.llm, reply.file
        assert checked.intent.value == expected["intent"], reply.file
        assert checked.confidence == expected["confidence"], reply.file
        assert checked.return_date == reply.llm.get("return_date"), reply.file
        assert checked.referral_email == expected["referral_email"], reply.file
        assert checked.summary == expected["summary"], reply.file
        assert classification.model == MODEL and classification.prompt_version == PROMPT_VERSION
        assert classification.prompt_tokens > 0 and classification.cost_usd > 0
        assert classification.input_hash and not classification.cache_hit
    prompts = [user_text(record.body) for record in server.request_log()]
    assert len(prompts) == len(CORPUS)
    for reply in CORPUS:
        [prompt] = [p for p in prompts if reply.match in p]
        # Only the new text, inside the data tag, never the quoted history or our address.
        data = prompt.partition("<reply>")[2]
        assert reply.match in data and data.endswith("</reply>")
        assert "sam@seller.example" not in prompt
        if reply.not_in_text:
            assert reply.not_in_text not in prompt, reply.file


def test_a_reply_classified_before_is_never_paid_for_again(server, cache):
    replies = [_content(reply) for reply in CORPUS[:5]]
    first = classify_all(server, cache, replies)
    again = classify_all(server, cache, replies)
    assert server.stats().requests == 5
    assert [c.intent for c in again] == [c.intent for c in first]
    assert all(c.cache_hit for c in again)
    # Another day of arrival resolves relative dates differently: a new key, a new call.
    [later] = classify_all(server, cache, replies[:1], received=date(2026, 12, 1))
    assert not later.cache_hit and server.stats().requests == 6


def test_an_llm_that_keeps_failing_leaves_the_rules_answer_with_the_reason(server, cache):
    server.script([Fault.SERVER_ERROR] * 3)
    [found] = classify_all(server, cache, [_content(CORPUS[5])], retries=2)  # an absence notice
    assert found.method is ClassificationMethod.rules
    assert found.intent.intent is Intent.out_of_office
    assert found.intent.return_date == date(2026, 12, 14)
    assert found.note == "LLM: HTTP 500 (server_error) after 3 attempt(s)"
    assert server.stats().requests == 3  # retried by the client, like generation


def test_an_answer_that_is_not_the_schema_is_not_retried(server, cache):
    server.script([Fault.INVALID])
    [found] = classify_all(server, cache, [_content(CORPUS[10])])  # an unsubscribe request
    assert found.method is ClassificationMethod.rules
    assert found.intent.intent is Intent.unsubscribe
    assert found.note == "LLM: output is not a valid IntentAnswer"
    assert server.stats().requests == 1


def test_an_answer_out_of_bounds_falls_back_and_is_not_cached(server, cache):
    server.set_responder(lambda request: {**CORPUS[0].answer(), "confidence": 7})
    try:
        [found] = classify_all(server, cache, [_content(CORPUS[0])])
        assert found.method is ClassificationMethod.rules
        assert found.note == "LLM: answer out of bounds (confidence, summary or names)"
        [again] = classify_all(server, cache, [_content(CORPUS[0])])
        assert not again.cache_hit and server.stats().requests == 2
    finally:
        server.set_responder(corpus_responder(CORPUS))


def test_no_text_costs_no_call(server, cache):
    found = classify_all(server, cache, [None, ReplyContent(subject="Re: hi")])
    assert [c.intent.intent for c in found] == [Intent.other, Intent.other]
    assert server.stats().requests == 0
