"""Bulk lead upserts and enrolments, one statement per chunk rather than one per lead."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.campaigns.campaign_file import first_send_date
from core.campaigns.lead_fields import PROFILE_FIELDS, LeadRow
from core.statuses import CampaignLeadStatus
from db.base import new_id, utcnow
from db.models import Campaign, CampaignLead, Lead

CHUNK = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class EnrolmentResult:
    """Lead ids newly enrolled, and those that already were (a no-op)."""

    enrolled: list[str]
    already_enrolled: list[str]


def _chunks(rows: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def upsert_leads(session: Session, workspace_id: str, leads: Sequence[LeadRow]) -> dict[str, str]:
    """Create or update leads by (workspace, lower(email)); returns lower(email) -> lead id.

    A blank value in the file never erases a value the lead already has, and custom fields
    are merged key by key.
    """
    ids: dict[str, str] = {}
    now = utcnow()
    # One row per address (the first, as in a CSV): PostgreSQL refuses to upsert a key twice.
    first: dict[str, LeadRow] = {}
    for lead in leads:
        first.setdefault(lead["email"].lower(), lead)
    unique = list(first.values())
    for chunk in _chunks(unique):
        rows = [_lead_values(workspace_id, lead, now) for lead in chunk]
        statement = insert(Lead).values(rows)
        excluded = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=[Lead.workspaceId, func.lower(Lead.email)],
            set_={
                **{
                    column: func.coalesce(excluded[column], Lead.__table__.c[column])
                    for column in PROFILE_FIELDS
                },
                "customFields": Lead.customFields.op("||")(excluded.customFields),
                "updatedAt": excluded.updatedAt,
            },
        ).returning(Lead.id, Lead.email)
        for lead_id, email in session.execute(upsert):
            ids[email.lower()] = lead_id
    return ids


def insert_new_lead(session: Session, workspace_id: str, lead: LeadRow) -> str | None:
    """Create a lead unless its address (in any case) is already one of the workspace's; the
    new lead's id, or None. Unlike `upsert_leads`, an existing lead is left exactly as it is."""
    statement = (
        insert(Lead)
        .values(_lead_values(workspace_id, lead, utcnow()))
        .on_conflict_do_nothing(index_elements=[Lead.workspaceId, func.lower(Lead.email)])
        .returning(Lead.id)
    )
    return session.scalar(statement)


def _lead_values(workspace_id: str, lead: LeadRow, now: datetime) -> dict[str, object]:
    return {
        "id": new_id(),
        "workspaceId": workspace_id,
        "email": lead["email"],
        **{column: lead.get(column) for column in PROFILE_FIELDS},
        "customFields": lead.get("customFields") or {},
        "createdAt": now,
        "updatedAt": now,
    }


def enrol_leads(
    session: Session, campaign_id: str, lead_ids: Sequence[str], first_send: datetime
) -> EnrolmentResult:
    """Enrol leads at step 1, due at first_send; an existing enrolment is left as it is."""
    enrolled: list[str] = []
    now = utcnow()
    for chunk in _chunks(lead_ids):
        statement = (
            insert(CampaignLead)
            .values(
                [
                    {
                        "id": new_id(),
                        "campaignId": campaign_id,
                        "leadId": lead_id,
                        "status": CampaignLeadStatus.active.value,
                        "currentStepOrder": 1,
                        "nextScheduledDate": first_send,
                        "createdAt": now,
                        "updatedAt": now,
                    }
                    for lead_id in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=[CampaignLead.campaignId, CampaignLead.leadId])
            .returning(CampaignLead.leadId)
        )
        enrolled.extend(session.scalars(statement))
    new = set(enrolled)
    return EnrolmentResult(
        enrolled=enrolled, already_enrolled=[i for i in lead_ids if i not in new]
    )


@dataclass(frozen=True)
class LeadFileEnrolment:
    """What one leads file did to one campaign."""

    enrolled: int
    already_enrolled: int
    leads_created_or_updated: int


def enrol_lead_rows(
    session: Session, campaign: Campaign, leads: Sequence[LeadRow], now: datetime
) -> LeadFileEnrolment:
    """Upsert validated lead rows into the campaign's workspace and enrol them (seed step 1)."""
    ids = upsert_leads(session, campaign.workspaceId, leads)
    result = enrol_leads(
        session, campaign.id, list(ids.values()), first_send_date(now, campaign.startAt)
    )
    return LeadFileEnrolment(
        enrolled=len(result.enrolled),
        already_enrolled=len(result.already_enrolled),
        leads_created_or_updated=len(ids),
    )
