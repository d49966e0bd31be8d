"""The campaign file (`campaign create --file campaign.yaml`): a campaign, its steps and rules."""

from datetime import datetime
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from core.campaigns.sending_rules import SendingRules, describe_errors
from core.campaigns.templates import check_template
from core.campaigns.variants import VARIANT_KEY_PATTERN
from core.statuses import CampaignStatus

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _File(BaseModel):
    # Field names are the database's own camelCase names; unknown keys are refused, not ignored.
    model_config = ConfigDict(extra="forbid")


class WorkspaceSpec(_File):
    id: NonBlank
    name: NonBlank


def _usable_template(template: str | None) -> str | None:
    problems = check_template(template, "template") if template is not None else []
    if problems:
        raise ValueError("; ".join(problems))
    return template


class VariantSpec(_File):
    """An A/B variant of its step: what it leaves out is the step's own."""

    key: Annotated[str, StringConstraints(pattern=VARIANT_KEY_PATTERN)]
    weight: int = Field(default=1, ge=0)
    subjectTemplate: NonBlank | None = None
    bodyTemplate: NonBlank | None = None
    aiInstructions: str | None = None

    _templates_are_usable = field_validator("subjectTemplate", "bodyTemplate")(_usable_template)


class StepSpec(_File):
    stepOrder: int = Field(ge=1)
    delayDays: int = Field(default=0, ge=0)
    subjectTemplate: NonBlank
    bodyTemplate: NonBlank
    aiInstructions: str | None = None
    variants: list[VariantSpec] = Field(default_factory=list)

    _templates_are_usable = field_validator("subjectTemplate", "bodyTemplate")(_usable_template)

    @field_validator("variants")
    @classmethod
    def _variants_can_be_assigned(
        cls, variants: list[VariantSpec], info: ValidationInfo
    ) -> list[VariantSpec]:
        # The error's path holds the step's place in the file; its stepOrder says which it is.
        step = f"step {info.data['stepOrder']}" if "stepOrder" in info.data else "this step"
        keys = [variant.key for variant in variants]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            repeats = ", ".join(repeated)
            raise ValueError(f"{step}: variant keys must be unique; repeated: {repeats}")
        if variants and not any(variant.weight > 0 for variant in variants):
            raise ValueError(f"{step}: at least one variant needs a weight above 0")
        return sorted(variants, key=lambda variant: variant.key)


class CampaignSpec(_File):
    """One campaign as written in YAML or JSON."""

    workspace: WorkspaceSpec
    id: NonBlank | None = None
    name: NonBlank
    goal: str | None = None
    status: CampaignStatus = CampaignStatus.draft
    startAt: AwareDatetime | None = None
    sendingRules: SendingRules = Field(default_factory=SendingRules)
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _steps_are_contiguous(cls, steps: list[StepSpec]) -> list[StepSpec]:
        orders = sorted(step.stepOrder for step in steps)
        expected = list(range(1, len(steps) + 1))
        if orders != expected:
            raise ValueError(
                f"stepOrder values must be 1..{len(steps)} with no gap or repeat; got {orders}"
            )
        return sorted(steps, key=lambda step: step.stepOrder)


class CampaignFileError(ValueError):
    """A campaign file that cannot be used; `problems` lists every error found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


def parse_campaign(document: object, source: str = "campaign file") -> CampaignSpec:
    """Validate a loaded YAML/JSON document, listing every problem at once."""
    try:
        return CampaignSpec.model_validate(document)
    except ValidationError as exc:
        raise CampaignFileError(source, describe_errors(exc)) from None


def first_send_date(now: datetime, start_at: datetime | None) -> datetime:
    """Enrolment date of the first send: now, or the campaign's startAt if that is later."""
    return max(now, start_at) if start_at is not None else now
