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
    field_validator,
)

from core.campaigns.sending_rules import SendingRules, describe_errors
from core.campaigns.templates import check_template
from core.statuses import CampaignStatus

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _File(BaseModel):
    # Field names are the database's own camelCase names; unknown keys are refused, not ignored.
    model_config = ConfigDict(extra="forbid")


class WorkspaceSpec(_File):
    id: NonBlank
    name: NonBlank


class StepSpec(_File):
    stepOrder: int = Field(ge=1)
    delayDays: int = Field(default=0, ge=0)
    subjectTemplate: NonBlank
    bodyTemplate: NonBlank
    aiInstructions: str | None = None

    @field_validator("subjectTemplate", "bodyTemplate")
    @classmethod
    def _template_is_usable(cls, template: str) -> str:
        problems = check_template(template, "template")
        if problems:
            raise ValueError("; ".join(problems))
        return template


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
