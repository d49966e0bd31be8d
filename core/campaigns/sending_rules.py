"""`Campaign.sendingRules`: the JSON the web app stores, as a validated pydantic model."""

import re
from datetime import date, time
from enum import StrEnum
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from core.breakers import BreakerLines
from core.campaigns.countries import holiday_country


def check_timezone(name: str) -> str:
    """Accept only IANA zone names that zoneinfo knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Paris')") from exc
    return name


TimeZoneName = Annotated[str, AfterValidator(check_timezone)]


def check_country(code: str) -> str:
    """Accept an ISO 3166-1 alpha-2 code the holidays package has a calendar for (any case)."""
    country = holiday_country(code)
    if country is None:
        raise ValueError(
            f"{code!r} is not an ISO 3166-1 alpha-2 country code with a holiday calendar"
            " (e.g. 'US', 'FR', 'GB')"
        )
    return country


CountryCode = Annotated[str, AfterValidator(check_country)]
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def check_iso_date(value: object) -> object:
    """Let through only YYYY-MM-DD text or a date (YAML's), not epoch numbers or datetimes."""
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        return value.strip()
    if type(value) is date:
        return value
    raise ValueError(f"{value!r} is not an ISO date such as '2026-12-24'")


IsoDate = Annotated[date, BeforeValidator(check_iso_date)]


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"

    @property
    def number(self) -> int:
        """Monday is 0, as in datetime.weekday() (not `index`, which would hide str.index)."""
        return list(Weekday).index(self)


class GenerationFailurePolicy(StrEnum):
    fallback = "fallback"  # send the rendered template instead
    hold = "hold"  # keep the lead waiting with a visible reason and retry later


class ReviewPolicy(StrEnum):
    """Which generated messages wait for a person's approval before they may be sent."""

    none = "none"  # every message is sent as generated
    all = "all"  # every message
    # The first reviewCount messages of each step, then those the gate fell back on or flagged.
    first = "first"


class ABMetric(StrEnum):
    """What an A/B test compares: never opens, which privacy proxies fake."""

    positive_reply_rate = "positive_reply_rate"  # replies classified interested or meeting
    reply_rate = "reply_rate"


class _Rules(BaseModel):
    # camelCase in JSON, like everything else the web app writes; unknown keys are typos.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SendWindow(_Rules):
    """Local hours and days in which mail may leave."""

    start: time = time(9, 0)
    end: time = time(17, 0)
    days: list[Weekday] = Field(
        default_factory=lambda: [Weekday.mon, Weekday.tue, Weekday.wed, Weekday.thu, Weekday.fri],
        min_length=1,
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        return self


class Mailbox(_Rules):
    """A sending address; a lead sticks to one mailbox for its whole thread."""

    email: EmailStr
    name: str | None = None
    daily_limit: int | None = Field(default=None, ge=1)


class ABTest(_Rules):
    """How a step's variants are compared (the campaign report) and whether a winner is chosen."""

    auto_select: bool = Field(
        default=False,
        description="Once significant, with minSendsPerVariant each, later leads get the winner.",
    )
    level: float = Field(default=0.05, gt=0, lt=0.5, description="Two-sided significance level.")
    min_sends_per_variant: int = Field(default=200, ge=1)
    metric: ABMetric | None = Field(
        default=None,
        description="Empty: the positive-reply rate when replies are classified, else replies.",
    )


class SendingRules(_Rules):
    """Everything that shapes when and how a campaign's mail leaves. Every field has a default."""

    timezone: TimeZoneName = "UTC"
    window: SendWindow = Field(default_factory=SendWindow)
    daily_limit: int = Field(default=200, ge=1, description="Sends per campaign per local day.")
    mailbox_daily_limit: int = Field(default=50, ge=1, description="Default per-mailbox cap.")
    min_gap_seconds: int = Field(default=60, ge=0, description="Between sends from one mailbox.")
    jitter_seconds: int = Field(default=30, ge=0, description="Random extra gap, 0..jitter.")
    from_name: str | None = None
    from_email: EmailStr | None = None
    reply_to: EmailStr | None = None
    mailboxes: list[Mailbox] = Field(default_factory=list)
    thread_follow_ups: bool = True
    stop_on_company_reply: bool = False
    link_allowlist: list[str] = Field(
        default_factory=list, description="Domains the LLM may link to; empty means none."
    )
    html_body: bool = False
    on_generation_failure: GenerationFailurePolicy = GenerationFailurePolicy.fallback
    max_subject_length: int = Field(default=120, ge=10)
    max_body_length: int = Field(default=5000, ge=100)
    skip_holidays: bool = False
    holiday_country: CountryCode | None = None
    skip_dates: list[IsoDate] = Field(
        default_factory=list, max_length=366, description="Local dates on which nothing is sent."
    )
    protection: BreakerLines = Field(
        default_factory=BreakerLines, description="Where the campaign's circuit breaker trips."
    )
    # Before `review`, whose validator checks the two together.
    review_count: int | None = Field(
        default=None,
        ge=1,
        description="With review: first, how many messages of each step need approval.",
    )
    review: ReviewPolicy = Field(default=ReviewPolicy.none, validate_default=True)
    ab_test: ABTest = Field(default_factory=ABTest)

    @model_validator(mode="after")
    def _sender_is_one_shape(self) -> Self:
        if self.mailboxes and self.from_email:
            raise ValueError("give either fromEmail or mailboxes, not both")
        return self

    @field_validator("review", mode="after")
    @classmethod
    def _review_count_goes_with_first(
        cls, review: ReviewPolicy, info: ValidationInfo
    ) -> ReviewPolicy:
        # On `review` (validated even when absent), so the error names a field, not the root.
        if "review_count" not in info.data:
            return review  # reviewCount itself was refused, and says why
        count = info.data["review_count"]
        if review is ReviewPolicy.first and count is None:
            raise ValueError("review: first needs reviewCount (how many of each step to approve)")
        if review is not ReviewPolicy.first and count is not None:
            raise ValueError(f"reviewCount applies only to review: first, not review: {review}")
        return review

    def sending_mailboxes(self) -> list[Mailbox]:
        """The mailboxes to rotate over; a lone fromEmail is a single mailbox."""
        if self.mailboxes:
            return self.mailboxes
        if self.from_email:
            return [Mailbox(email=self.from_email, name=self.from_name)]
        return []


def parse_sending_rules(raw: object) -> SendingRules:
    """Validate the JSON stored in `Campaign.sendingRules`; None or {} means all defaults."""
    return SendingRules.model_validate(raw or {})


def campaign_lines(raw: object) -> BreakerLines:
    """A campaign's breaker lines; the defaults when its rules do not validate (its sends wait
    for the rules to be fixed, but mail it already sent still counts)."""
    try:
        return parse_sending_rules(raw).protection
    except ValidationError:
        return BreakerLines()


def describe_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """One human line per pydantic error: `field.path: message`."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        lines.append(f"{path or '(root)'}: {error['msg']}")
    return lines
