"""A reply's intent: the LLM's answer as it arrives, and the checked classification it becomes."""

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.replies.reply_text import without_addresses

# A date further out than this is not a return date anyone means for a follow-up (a misread
# year, a phone number parsed as a date): the default pause applies instead.
RETURN_DATE_HORIZON = timedelta(days=366)
SUMMARY_CHARS = 200
_NAME_CHARS = 200


class Intent(StrEnum):
    """What a reply wants; the database checks the same list."""

    interested = "interested"
    meeting_request = "meeting_request"
    not_interested = "not_interested"
    not_now = "not_now"
    out_of_office = "out_of_office"
    referral = "referral"
    unsubscribe = "unsubscribe"
    auto_reply = "auto_reply"
    other = "other"


# A reply is positive when its classification says the lead wants to talk (the campaign
# report's positive replies, an A/B test's metric); a referral points elsewhere and is not one.
POSITIVE_INTENTS = (Intent.interested, Intent.meeting_request)


class ClassificationMethod(StrEnum):
    llm = "llm"  # structured output of the configured model
    rules = "rules"  # no key, or the LLM failed: headers, phrases and dates only


class IntentAnswer(BaseModel):
    """The LLM's structured output. Plain JSON types only, every field required and no bounds
    in the schema, as strict structured outputs want; `ReplyIntent` checks the values."""

    # The docstring and descriptions are sent to the model as the schema.
    model_config = ConfigDict(extra="forbid", frozen=True)

    intent: Intent = Field(description="The one intent that best describes the new text.")
    confidence: float = Field(description="How sure you are of the intent, from 0 to 1.")
    return_date: str | None = Field(
        description="YYYY-MM-DD: the day they are back or said to write again; null if not said."
    )
    referral_email: str | None = Field(
        description="The address of the person they point to, exactly as written; else null."
    )
    referral_name: str | None = Field(description="That person's name, if written; else null.")
    summary: str = Field(description="One line saying what the reply wants, with no addresses.")


class ReplyIntent(BaseModel):
    """A reply's intent, checked: a confidence within 0..1, a return date after the reply and
    within a year, one-line fields, and a summary that names no address."""

    model_config = ConfigDict(frozen=True)

    intent: Intent
    confidence: float = Field(ge=0, le=1)
    return_date: date | None = None
    referral_email: str | None = Field(default=None, max_length=320)
    referral_name: str | None = Field(default=None, max_length=_NAME_CHARS)
    summary: str = Field(min_length=1)

    @field_validator("summary")
    @classmethod
    def _one_line_without_addresses(cls, summary: str) -> str:
        # The summary reaches the run's logs, artifacts and the Prefect event; an address in it
        # would carry a person's identity there.
        line = " ".join(without_addresses(summary).split())
        return line[:SUMMARY_CHARS]

    @field_validator("referral_name", "referral_email")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        line = " ".join(value.split()) if value else ""
        return line[:_NAME_CHARS] or None

    @classmethod
    def from_answer(cls, answer: IntentAnswer, *, received: date) -> "ReplyIntent":
        """The checked intent of an LLM answer; ValidationError when a value is out of bounds.

        A return date that is not a date, not after the reply or further than a year out is
        dropped (the default pause applies), not an error: the intent itself still holds.
        """
        return cls(
            intent=answer.intent,
            confidence=answer.confidence,
            return_date=usable_return_date(answer.return_date, received=received),
            referral_email=answer.referral_email,
            referral_name=answer.referral_name,
            summary=answer.summary,
        )


def usable_return_date(value: str | date | None, *, received: date) -> date | None:
    """`value` as a date after `received` and within `RETURN_DATE_HORIZON`, else None."""
    if value is None:
        return None
    if not isinstance(value, date):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError:
            return None
    return value if received < value <= received + RETURN_DATE_HORIZON else None


@dataclass(frozen=True)
class Classification:
    """A reply's intent and how it was reached: what the ReplyClassification row keeps."""

    intent: ReplyIntent
    method: ClassificationMethod
    model: str | None = None
    prompt_version: str | None = None
    input_hash: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    cost_usd: float | None = 0.0  # None: the LLM's model has no price
    # Why the rules answered although an LLM is configured (its error), else None.
    note: str | None = None
    cache_hit: bool = False
