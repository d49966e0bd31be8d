"""`campaign-pipeline demo`: seed the demo workspace, campaign and leads shipped in demo/."""

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cli.context import Database
from core.campaigns.campaign_file import parse_campaign
from core.campaigns.lead_import import read_leads_csv
from core.delivery.report import DeliveryReport
from core.generation.report import CampaignCounts
from db.base import utcnow
from db.engine import unit_of_work
from db.models import Campaign, CampaignLead, EmailSend
from db.queries.campaigns import create_campaign, get_campaign
from db.queries.enrolment import LeadFileEnrolment, enrol_lead_rows

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"


@dataclass(frozen=True)
class DemoSeed:
    """What seeding did."""

    campaign_id: str
    created: bool
    enrolment: LeadFileEnrolment
    rejected: list[str]


def seed_demo(database: Database, *, reset: bool = False) -> DemoSeed:
    """Create the demo campaign if missing and enrol the demo leads (a no-op the second time)."""
    spec = parse_campaign(
        yaml.safe_load((DEMO_DIR / "campaign.yaml").read_text(encoding="utf-8")),
        source="demo/campaign.yaml",
    )
    assert spec.id is not None
    leads = read_leads_csv((DEMO_DIR / "leads.csv").read_bytes())
    with unit_of_work(database.sessions) as session:
        if reset:
            session.execute(delete(Campaign).where(Campaign.id == spec.id))
        campaign = get_campaign(session, spec.id)
        created = campaign is None
        if campaign is None:
            campaign = create_campaign(session, spec)
        enrolment = enrol_lead_rows(session, campaign, leads.rows(), utcnow())
    return DemoSeed(spec.id, created, enrolment, [str(p) for p in leads.problems])


def lead_status_counts(session: Session, campaign_id: str) -> dict[str, int]:
    """How many of the campaign's leads are in each status."""
    rows = session.execute(
        select(CampaignLead.status, func.count())
        .where(CampaignLead.campaignId == campaign_id)
        .group_by(CampaignLead.status)
    )
    return {status: count for status, count in rows.tuples()}


def run_generation(campaign_id: str) -> dict[str, CampaignCounts]:
    """Run process-campaign-sends once, now, for the demo campaign."""
    from flows.process_campaign_sends import process_campaign_sends

    counts = asyncio.run(process_campaign_sends(as_of=utcnow(), campaign_id=campaign_id))
    # Without regenerate_step the flow counts per campaign; its return type covers both modes.
    return cast(dict[str, CampaignCounts], counts)


def run_delivery(campaign_id: str) -> DeliveryReport:
    """Run send-scheduled-emails once, now, for the demo campaign, without waiting for gaps."""
    from flows.send_scheduled_emails import send_scheduled_emails

    return asyncio.run(send_scheduled_emails(campaign_id=campaign_id, max_wait_seconds=0))


def send_times(session: Session, campaign_id: str) -> list[datetime]:
    """When the campaign's scheduled sends are due."""
    query = select(EmailSend.scheduledFor).where(
        EmailSend.campaignId == campaign_id, EmailSend.status == "scheduled"
    )
    return [when for when in session.scalars(query) if when is not None]
