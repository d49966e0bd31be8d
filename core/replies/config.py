"""What reply classification is configured with, built once from the settings at a flow's start."""

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.generation.config import GenerationConfig
from core.settings import Settings


class ReplyPolicy(BaseModel):
    """How a classification turns into an action."""

    model_config = ConfigDict(frozen=True)

    # Below it, the intent is not trusted: the lead stops as `replied`, as any reply did.
    min_confidence: float = Field(default=0.6, ge=0, le=1)
    # An out-of-office or not-now reply that names no return date pauses the follow-up this long.
    default_pause: timedelta = timedelta(days=7)


class ReplyIntentConfig(BaseModel):
    """The LLM that classifies replies (generation's: same key, model, limits and retries) and
    the policy; without a key the rules classify."""

    model_config = ConfigDict(frozen=True)

    llm: GenerationConfig
    policy: ReplyPolicy = ReplyPolicy()

    @classmethod
    def from_settings(cls, settings: Settings) -> "ReplyIntentConfig":
        """OPENAI_* and LLM_* as generation reads them, REPLY_INTENT_MIN_CONFIDENCE and
        REPLY_DEFAULT_PAUSE_DAYS."""
        return cls(
            llm=GenerationConfig.from_settings(settings),
            policy=ReplyPolicy(
                min_confidence=settings.reply_intent_min_confidence,
                default_pause=timedelta(days=settings.reply_default_pause_days),
            ),
        )
