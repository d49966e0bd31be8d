"""The reply corpus of `tests/fixtures/replies/` and the fake LLM's answers to it.

`expected.yaml` lists, per reply, what the rules make of it and what the fake OpenAI server
answers for it (found by a phrase of its new text); the tests check that each path records and
acts on exactly that.
"""

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from tests.support.openai_wire import Responder, default_responder, schema_name, user_text

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "replies"
# The day every reply of the corpus arrived (its Date header).
RECEIVED = date(2026, 11, 30)
SEND_DOMAIN = "seller.example"


@dataclass(frozen=True)
class CorpusReply:
    """One reply of the corpus and what both paths must make of it."""

    file: str
    match: str
    rules: dict[str, Any]
    llm: dict[str, Any]
    action: str
    rules_action: str
    not_in_text: str | None = None

    @property
    def raw(self) -> bytes:
        return (CORPUS / self.file).read_bytes()

    @property
    def number(self) -> int:
        return int(self.file[:2])

    @property
    def message_id(self) -> str:
        """The Message-ID of the email it answers."""
        return f"<corpus-{self.number:02d}@{SEND_DOMAIN}>"

    def answer(self) -> dict[str, Any]:
        """The fake LLM's structured answer, every field present."""
        return {
            "intent": self.llm["intent"],
            "confidence": self.llm.get("confidence", 0.9),
            "return_date": _iso(self.llm.get("return_date")),
            "referral_email": self.llm.get("referral_email"),
            "referral_name": self.llm.get("referral_name"),
            "summary": self.llm["summary"],
        }


def load_corpus() -> list[CorpusReply]:
    entries = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
    return [
        CorpusReply(
            file=entry["file"],
            match=entry["match"],
            rules=entry["rules"],
            llm=entry["llm"],
            action=entry["action"],
            rules_action=entry.get("rules_action", "stopped"),
            not_in_text=entry.get("not_in_text"),
        )
        for entry in entries
    ]


def corpus_responder(corpus: list[CorpusReply]) -> Responder:
    """Answers each classification request with its corpus reply's `llm` entry (found by its
    phrase); anything else as the default responder does."""

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        if schema_name(request) == "IntentAnswer":
            text = user_text(request)
            for reply in corpus:
                if reply.match in text:
                    return reply.answer()
        return default_responder(request)

    return respond


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, date) else None
