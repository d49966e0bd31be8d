"""Reading a Chat Completions answer: the five fields the generator needs, and every way an
answer can hold no usable draft."""

import json

import pytest

from core.generation.draft import EmailDraft
from core.generation.llm import LLMOutputError, _read

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


def test_a_draft_is_read_with_the_answering_snapshot_and_its_tokens():
    read = _read(answer(), EmailDraft, requested_model="gpt-4o-mini", attempts=2)
    assert read == (EmailDraft(**DRAFT), "gpt-4o-mini-2024-07-18", 812, 64)


def test_an_answer_without_usage_or_model_counts_nothing_and_keeps_the_requested_model():
    body = json.loads(answer())
    del body["usage"], body["model"]
    read = _read(json.dumps(body).encode(), EmailDraft, requested_model="m", attempts=1)
    assert read == (EmailDraft(**DRAFT), "m", 0, 0)


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
    read = _read(content, EmailDraft, requested_model="m", attempts=3)
    assert isinstance(read, LLMOutputError)
    assert (str(read), read.attempts) == (reason, 3)
