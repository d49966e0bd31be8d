"""Reading a Chat Completions answer: the few fields the generator needs (draft, snapshot,
tokens, cached tokens, service tier), and every way an answer can hold no usable draft."""

import json

import pytest

from core.generation.draft import EmailDraft
from core.generation.llm import LLMOutputError, read_completion
from core.generation.pricing import DEFAULT_PRICES
from core.statuses import Pricing

DRAFT = {"subject": "Quick question", "body": "Hi Ada,\n\nOne idea.\n\nBest"}


def answer(
    *,
    finish_reason: str = "stop",
    content: str | None = json.dumps(DRAFT),
    refusal: str | None = None,
) -> bytes:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876},
        }
    ).encode()


def read(content: bytes | dict, *, requested_model: str = "m", attempts: int = 1):
    return read_completion(
        content,
        EmailDraft,
        requested_model=requested_model,
        attempts=attempts,
        latency_ms=5,
        prices=DEFAULT_PRICES,
    )


def test_a_draft_is_read_with_the_answering_snapshot_and_its_tokens():
    done = read(answer(), requested_model="gpt-4o-mini", attempts=2)
    assert not isinstance(done, LLMOutputError)
    assert (done.output, done.model, done.prompt_tokens, done.completion_tokens) == (
        EmailDraft(**DRAFT),
        "gpt-4o-mini-2024-07-18",
        812,
        64,
    )
    assert (done.attempts, done.cached_tokens, done.pricing) == (2, 0, Pricing.standard)
    # gpt-4o-mini: $0.15 per 1M prompt tokens, $0.60 per 1M completion tokens.
    assert done.cost_usd == pytest.approx(812 * 0.15e-6 + 64 * 0.60e-6)


def test_cached_tokens_and_the_flex_tier_are_read_from_a_batch_lines_body_too():
    body = json.loads(answer())
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 512}
    body["service_tier"] = "flex"
    for content in (json.dumps(body).encode(), body):
        done = read(content)
        assert not isinstance(done, LLMOutputError)
        assert (done.cached_tokens, done.pricing) == (512, Pricing.flex)


def test_an_answer_without_usage_or_model_counts_nothing_and_keeps_the_requested_model():
    body = json.loads(answer())
    del body["usage"], body["model"]
    done = read(json.dumps(body).encode())
    assert not isinstance(done, LLMOutputError)
    assert (done.output, done.model, done.prompt_tokens, done.completion_tokens) == (
        EmailDraft(**DRAFT),
        "m",
        0,
        0,
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<html>Bad gateway</html>", "response is not a chat completion"),
        (b'{"object": "chat.completion"}', "response is not a chat completion"),
        (b'{"choices": []}', "response is not a chat completion"),
        (answer(finish_reason="length"), "output cut off at the token limit"),
        (answer(finish_reason="content_filter"), "output blocked by a content filter"),
        (answer(content=None, refusal="I can't help"), "the model refused"),
        (answer(content='{"subject": "x"}'), "output is not a valid EmailDraft"),
    ],
)
def test_an_answer_with_no_usable_draft_is_an_output_error(content, reason):
    done = read(content, attempts=3)
    assert isinstance(done, LLMOutputError)
    assert (str(done), done.attempts) == (reason, 3)
