"""A claimed (or previewed) due lead with everything its generation needs, as plain data."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.campaigns.variants import StepVariant, choose_variant
from core.generation.thread import SentEmail


class PregeneratedDraft(BaseModel):
    """A draft written ahead through the Batch API for this lead's step (already gated), and
    the content hash it was written from: used only while the lead's hash still matches."""

    model_config = ConfigDict(frozen=True)

    messageId: str
    subject: str
    body: str
    inputHash: str
    model: str
    promptTokens: int
    cachedTokens: int
    completionTokens: int
    costUsd: Decimal | None  # None: its model has no price
    cachedCostUsd: Decimal


class DueLead(BaseModel):
    """One CampaignLead at its current step, joined with its lead, campaign and step."""

    model_config = ConfigDict(frozen=True)

    campaignLeadId: str
    campaignId: str
    leadId: str
    workspaceId: str
    stepOrder: int
    nextScheduledDate: datetime
    attempts: int
    # The lead's profile, as template variables see it.
    email: str
    firstName: str | None = None
    lastName: str | None = None
    companyName: str | None = None
    title: str | None = None
    industry: str | None = None
    companySize: str | None = None
    website: str | None = None
    timezone: str | None = None
    # Raw JSON too: a value that is not an object holds this lead alone (see generation.prepare).
    customFields: Any = {}
    # The campaign; sendingRules stay raw JSON so a bad rules object is reported per lead, even
    # one that is not an object at all (a dict type here would fail the claim of every lead).
    goal: str | None = None
    sendingRules: Any = {}
    # The step at currentStepOrder (None when the campaign has no such step) and the next one.
    stepId: str | None = None
    subjectTemplate: str | None = None
    bodyTemplate: str | None = None
    aiInstructions: str | None = None
    nextStepDelayDays: int | None = None
    # The step's A/B variants and its recorded winner (`db.queries.variants`), and the variant
    # the lead is in: pinned beforehand by a backfill (its send's), set by `in_variant`.
    variants: tuple[StepVariant, ...] = ()
    variantWinner: str | None = None
    variantKey: str | None = None
    # What earlier steps sent this lead and what came back; loaded beside the claim, so a lead
    # at step 1 (or one whose earlier sends never went out) has none.
    thread: tuple[SentEmail, ...] = ()
    # The step's draft written ahead (`pregenerate-upcoming-steps`), loaded with the claim.
    pregenerated: PregeneratedDraft | None = None

    def in_variant(self) -> "DueLead":
        """The lead with its variant's overrides in place of the step's templates and
        instructions, and its key; unchanged (no key) for a step without variants."""
        # Most steps have no variants: the lead is used as it is, with no copy on the hot path.
        if self.stepId is None or (not self.variants and self.variantKey is None):
            return self
        variant = choose_variant(
            self.variants,
            step_id=self.stepId,
            campaign_lead_id=self.campaignLeadId,
            winner=self.variantWinner,
            pinned=self.variantKey,
        )
        if variant is None:
            return self.model_copy(update={"variantKey": None})
        return self.model_copy(
            update={
                "variantKey": variant.key,
                "subjectTemplate": variant.subjectTemplate or self.subjectTemplate,
                "bodyTemplate": variant.bodyTemplate or self.bodyTemplate,
                "aiInstructions": variant.aiInstructions or self.aiInstructions,
            }
        )

    @property
    def profile_fields(self) -> dict[str, str | None]:
        """The Lead columns a template may use."""
        return {
            "email": self.email,
            "firstName": self.firstName,
            "lastName": self.lastName,
            "companyName": self.companyName,
            "title": self.title,
            "industry": self.industry,
            "companySize": self.companySize,
            "website": self.website,
            "timezone": self.timezone,
        }
