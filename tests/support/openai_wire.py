"""OpenAI Chat Completions wire shapes and the default responder of the fake server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    """What the fake server does with one request; OK is a normal completion."""

    OK = "ok"
    RATE_LIMIT = "429"
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    BAD_REQUEST = "400"
    TIMEOUT = "timeout"  # hold the request open past the client's timeout
    MALFORMED = "malformed"  # 200 whose content is not JSON
    INVALID = "invalid"  # 200 whose JSON misses the schema's "body"
    CONNECTION_DROP = "connection_drop"  # close the connection without a response


# request JSON -> message content (a dict is sent as JSON, a str verbatim) or a fault
Responder = Callable[[dict[str, Any]], "dict[str, Any] | str | Fault"]

PERSONAL_LINE = "I enjoyed reading about your team."
GENERIC_DRAFT = {
    "subject": "Quick question",
    "body": "Hi there,\n\nI wanted to reach out with a quick idea.\n\nBest regards",
}
_SUBJECT = re.compile(r"<draft_subject>(.*?)</draft_subject>", re.DOTALL)
_BODY = re.compile(r"<draft_body>(.*?)</draft_body>", re.DOTALL)
_INTENT_MARKER = re.compile(r"\[intent:([a-z_]+)\]")

_ERRORS: dict[Fault, tuple[str, str, str | None, str | None]] = {
    Fault.RATE_LIMIT: (
        "Rate limit reached for requests (fake server).",
        "requests",
        None,
        "rate_limit_exceeded",
    ),
    Fault.SERVER_ERROR: (
        "The server had an error while processing your request (fake server).",
        "server_error",
        None,
        None,
    ),
    Fault.UNAVAILABLE: (
        "The engine is currently overloaded, please try again later (fake server).",
        "server_error",
        None,
        None,
    ),
    Fault.BAD_REQUEST: (
        "Invalid 'messages': rejected by the fake server.",
        "invalid_request_error",
        "messages",
        "invalid_value",
    ),
}


def message_text(message: dict[str, Any]) -> str:
    """Return the text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def user_text(request: dict[str, Any]) -> str:
    """Return the text of the last user message of a request ("" if none)."""
    messages = request.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return message_text(users[-1]) if users else ""


def draft_from_request(request: dict[str, Any]) -> tuple[str, str] | None:
    """Return the (subject, body) between the draft delimiters, stripped, or None."""
    text = user_text(request)
    subject, body = _SUBJECT.search(text), _BODY.search(text)
    if subject is None or body is None:
        return None
    return subject.group(1).strip(), body.group(1).strip()


def schema_name(request: dict[str, Any]) -> str | None:
    """The name of the structured-output schema a request asks for (EmailDraft, IntentAnswer)."""
    response_format = request.get("response_format")
    if not isinstance(response_format, dict):
        return None
    schema = response_format.get("json_schema")
    return schema.get("name") if isinstance(schema, dict) else None


def intent_answer(request: dict[str, Any]) -> dict[str, Any]:
    """A reply classification: the intent a `[intent:NAME]` marker in the reply names, else
    `other`, with confidence 0.9 and nothing else found."""
    marker = _INTENT_MARKER.search(user_text(request))
    return {
        "intent": marker.group(1) if marker else "other",
        "confidence": 0.9,
        "return_date": None,
        "referral_email": None,
        "referral_name": None,
        "summary": "Classified by the fake server.",
    }


def default_responder(request: dict[str, Any]) -> dict[str, Any]:
    """Echo the draft with one personalised sentence prepended to the body; a classification
    request gets `intent_answer`."""
    if schema_name(request) == "IntentAnswer":
        return intent_answer(request)
    draft = draft_from_request(request)
    if draft is None:
        return dict(GENERIC_DRAFT)
    subject, body = draft
    return {"subject": subject, "body": f"{PERSONAL_LINE}\n\n{body}"}


def invalid_content(request: dict[str, Any]) -> str:
    """Return JSON that parses but misses the required ``body`` field."""
    draft = draft_from_request(request)
    return json.dumps({"subject": draft[0] if draft else GENERIC_DRAFT["subject"]})


def prompt_tokens(request: dict[str, Any]) -> int:
    """The fake's token count of a request's messages: a token per 4 characters, plus one."""
    messages = request.get("messages") or []
    return sum(len(message_text(m)) for m in messages if isinstance(m, dict)) // 4 + 1


def system_prefix(request: dict[str, Any]) -> tuple[str, int]:
    """The request's system message and its fake token count: the prefix prompt caching reuses."""
    messages = request.get("messages") or []
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    text = message_text(first) if first.get("role") == "system" else ""
    return text, len(text) // 4


def completion_object(
    request: dict[str, Any], content: dict[str, Any] | str, id_: str, *, cached_tokens: int = 0
) -> dict[str, Any]:
    """A ``chat.completion`` object carrying ``content``; ``cached_tokens`` of its prompt tokens
    are reported as read from the prompt cache (``usage.prompt_tokens_details``)."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    prompt, completion_tokens = prompt_tokens(request), len(text) // 4 + 1
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or "fake-model",
        "system_fingerprint": "fp_fake",
        # The tier that served the request, as the API reports it: the one asked for, if any.
        "service_tier": request.get("service_tier") or "default",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": min(cached_tokens, prompt)},
        },
    }


def completion_body(
    request: dict[str, Any], content: dict[str, Any] | str, id_: str, *, cached_tokens: int = 0
) -> bytes:
    """Serialise a ``chat.completion`` object carrying ``content``."""
    payload = completion_object(request, content, id_, cached_tokens=cached_tokens)
    return json.dumps(payload, ensure_ascii=False).encode()


def error_body(fault: Fault, message: str | None = None) -> bytes:
    """Serialise an OpenAI-shaped ``{"error": {...}}`` body for an error status."""
    default_message, type_, param, code = _ERRORS.get(fault, _ERRORS[Fault.SERVER_ERROR])
    error = {"message": message or default_message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()
