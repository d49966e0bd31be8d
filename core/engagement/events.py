"""Engagement events in one normalised shape, whatever their source, and how they are keyed.

Every source adapter (event files, webhooks, inbound mail) yields `NormalisedEvent`s, or a
`Malformed` line naming where and why, so one ingestion path deduplicates, matches events to
sends and applies the stop rules.
"""

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from core.replies.reply_text import ReplyContent, without_addresses
from core.statuses import EngagementType


class BounceKind(StrEnum):
    hard = "hard"  # permanent: the address does not exist or refuses mail
    soft = "soft"  # temporary: mailbox full, greylisted, out of service


class NormalisedEvent(BaseModel):
    """One engagement event, as every source reports it."""

    model_config = ConfigDict(frozen=True)

    type: EngagementType
    occurred_at: AwareDatetime
    # "mailbox" names inbound mail here: dedupe keys already stored begin with it.
    provider: str = Field(description="generic, sendgrid, postmark, mailgun or mailbox")
    source: str = Field(description="where it came from, e.g. file:events.jsonl, webhook:mailgun")
    provider_event_id: str | None = None
    # How the event finds its EmailSend: our id echoed back, our Message-ID, or the address.
    send_id: str | None = None
    message_id: str | None = Field(default=None, description="<...> Message-ID of our email")
    references: tuple[str, ...] = Field(
        default=(), description="Message-IDs a reply refers to (In-Reply-To, References)"
    )
    email: str | None = Field(default=None, description="the lead's address")
    url: str | None = None
    bounce_kind: BounceKind | None = None
    diagnostic: str | None = None
    bounce_reader: str | None = Field(
        default=None, description="what read a mailed bounce: rfc3464, flufl.bounce or prose"
    )
    line: int | None = Field(default=None, description="line or record number in its source")
    # Inbound replies and auto-replies only: what their classification reads. Never stored,
    # dumped or shown (no repr: a traceback or a log line never carries it), and not part of
    # the dedupe key (the same message read again is the same event).
    reply: ReplyContent | None = Field(default=None, exclude=True, repr=False)
    # Opens and clicks: what tells a machine's from a person's (core.engagement.machine). Read
    # here, never stored, dumped or shown (an address and a user agent say who and where), and
    # not part of the dedupe key.
    user_agent: str | None = Field(default=None, exclude=True, repr=False)
    ip: str | None = Field(default=None, exclude=True, repr=False)
    provider_machine: bool = Field(
        default=False, exclude=True, repr=False, description="the provider flagged a machine"
    )

    def dedupe_key(self) -> str:
        """The provider's own event id when it has one, else a hash of what the event says."""
        if self.provider_event_id:
            return f"{self.provider}:{self.provider_event_id}"
        content = {
            "type": self.type.value,
            "at": self.occurred_at.isoformat(),
            "send": self.send_id,
            "message": self.message_id,
            "refs": list(self.references),
            "email": self.email.lower() if self.email else None,
            "url": self.url,
            "bounce": self.bounce_kind.value if self.bounce_kind else None,
        }
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return f"{self.provider}:sha256:{digest[:40]}"

    def event_metadata(self) -> dict[str, Any]:
        """What EngagementEvent.metadata keeps: the details, never a body."""
        found = {
            "source": self.source,
            "provider": self.provider,
            "providerEventId": self.provider_event_id,
            "url": self.url,
            "bounceKind": self.bounce_kind.value if self.bounce_kind else None,
            "diagnostic": self.diagnostic,
            "bounceReader": self.bounce_reader,
        }
        return {key: value for key, value in found.items() if value is not None}


class Malformed(BaseModel):
    """A record that could not be read, with where it was and why."""

    model_config = ConfigDict(frozen=True)

    source: str
    line: int
    reason: str

    @field_validator("reason")
    @classmethod
    def _no_addresses(cls, reason: str) -> str:
        # A reason may quote the value it refused (`type: unknown type '...'`); when that is an
        # address, as in a record with its fields swapped, it must not reach the run's
        # malformed-records artifact or its logs.
        return without_addresses(reason)
