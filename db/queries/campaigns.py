"""Creating campaigns and their steps from a validated campaign file."""

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.campaigns.campaign_file import CampaignSpec
from db.base import new_id, utcnow
from db.models import Campaign, SequenceStep, SequenceStepVariant, Workspace


class CampaignExistsError(ValueError):
    """A campaign file names an id that is already taken."""


def ensure_workspace(session: Session, workspace_id: str, name: str) -> None:
    """Create the workspace if the web app has not already."""
    now = utcnow()
    session.execute(
        insert(Workspace)
        .values(id=workspace_id, name=name, createdAt=now, updatedAt=now)
        .on_conflict_do_nothing(index_elements=[Workspace.id])
    )


def create_campaign(session: Session, spec: CampaignSpec) -> Campaign:
    """Insert a campaign and its steps; refuses an id that exists."""
    if spec.id is not None and session.get(Campaign, spec.id) is not None:
        raise CampaignExistsError(f"campaign {spec.id!r} already exists; nothing was written")
    ensure_workspace(session, spec.workspace.id, spec.workspace.name)
    campaign = Campaign(
        id=spec.id or new_id(),
        workspaceId=spec.workspace.id,
        name=spec.name,
        goal=spec.goal,
        status=spec.status.value,
        startAt=spec.startAt,
        sendingRules=spec.sendingRules.model_dump(mode="json", by_alias=True, exclude_unset=True),
    )
    session.add(campaign)
    for spec_step in spec.steps:
        step = SequenceStep(
            id=new_id(),
            campaignId=campaign.id,
            stepOrder=spec_step.stepOrder,
            delayDays=spec_step.delayDays,
            subjectTemplate=spec_step.subjectTemplate,
            bodyTemplate=spec_step.bodyTemplate,
            aiInstructions=spec_step.aiInstructions,
        )
        session.add(step)
        session.add_all(
            SequenceStepVariant(stepId=step.id, **variant.model_dump())
            for variant in spec_step.variants
        )
    session.flush()
    return campaign


def get_campaign(session: Session, campaign_id: str) -> Campaign | None:
    """The campaign with this id, if any."""
    return session.get(Campaign, campaign_id)
