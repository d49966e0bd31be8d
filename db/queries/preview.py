"""The campaign step and the lead a preview generates for, read as a run reads a due lead.

Reads only: a preview is not a send, so nothing here writes, claims or locks. The lead must
carry what the claim (`db.queries.claims`) gives a due lead, or a preview would differ from
what a run writes: whatever generation comes to need from the database, it needs here too.
"""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.campaigns.lead_fields import LEAD_FIELDS
from core.generation.due_lead import DueLead
from core.generation.preview import InlineLead, PreviewNotFoundError
from db.models import Campaign, CampaignLead, Lead, SequenceStep
from db.queries.regeneration import find_step
from db.queries.threads import due_leads


def preview_lead(
    session: Session,
    *,
    campaign_id: str,
    step_order: int,
    now: datetime,
    lead_id: str | None = None,
    email: str | None = None,
    inline: InlineLead | None = None,
) -> DueLead:
    """The lead at this step of the campaign, as generation takes it; exactly one of `lead_id`,
    `email` (a lead of the campaign's workspace) or `inline` names the lead.

    Raises PreviewNotFoundError for a campaign, step or lead that does not exist.
    """
    target = find_step(session, campaign_id=campaign_id, step_order=step_order)
    problem = target.problem()
    if problem is not None:
        raise PreviewNotFoundError(problem)
    campaign = session.get(Campaign, campaign_id)
    step = session.get(SequenceStep, target.step_id)
    assert campaign is not None and step is not None
    if inline is not None:
        fields = inline.model_dump()
        found_id = ""
    else:
        lead = _workspace_lead(session, campaign.workspaceId, lead_id=lead_id, email=email)
        if lead is None:
            which = f"id {lead_id!r}" if lead_id is not None else f"address {email!r}"
            raise PreviewNotFoundError(
                f"no lead with {which} in the workspace of campaign {campaign_id}"
            )
        fields = {name: getattr(lead, name) for name in (*LEAD_FIELDS, "customFields")}
        found_id = lead.id
    # The enrolment's id when the lead is enrolled, so the preview takes the A/B variant a run
    # gives it; otherwise it only labels the outcome, as in a step backfill.
    enrolment = session.scalar(
        select(CampaignLead.id).where(
            CampaignLead.campaignId == campaign.id, CampaignLead.leadId == found_id
        )
    )
    row = {
        "campaignLeadId": enrolment or "",
        "campaignId": campaign.id,
        "leadId": found_id,
        "workspaceId": campaign.workspaceId,
        "stepOrder": step.stepOrder,
        "nextScheduledDate": now,
        "attempts": 0,
        "goal": campaign.goal,
        "sendingRules": campaign.sendingRules,
        "stepId": step.id,
        "subjectTemplate": step.subjectTemplate,
        "bodyTemplate": step.bodyTemplate,
        "aiInstructions": step.aiInstructions,
        **fields,
    }
    # A follow-up's thread is loaded as the claim loads it, so the preview writes (and caches)
    # the email a run would write.
    (due,) = due_leads(session, [row])
    return due


def _workspace_lead(
    session: Session, workspace_id: str, *, lead_id: str | None, email: str | None
) -> Lead | None:
    query = select(Lead).where(Lead.workspaceId == workspace_id)
    if lead_id is not None:
        query = query.where(Lead.id == lead_id)
    elif email is not None:
        # The expression of the unique index Lead_workspaceId_email_key, so the index answers.
        query = query.where(func.lower(Lead.email) == func.lower(email))
    else:
        raise ValueError("name the lead by id or by address")
    return session.scalars(query).one_or_none()
