"""add_ai_campaign_fields: the seed's goal, aiInstructions, currentStepOrder, nextScheduledDate.

The same change ships as plain SQL in db/sql/add_ai_campaign_fields.sql for the
Supabase SQL editor; a test proves both give the same schema.

Revision ID: add_ai_campaign_fields
Revises: baseline
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "add_ai_campaign_fields"
down_revision: str | None = "baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("Campaign", sa.Column("goal", sa.Text()))
    op.add_column("SequenceStep", sa.Column("aiInstructions", sa.Text()))
    op.add_column("CampaignLead", sa.Column("currentStepOrder", sa.Integer()))
    op.add_column("CampaignLead", sa.Column("nextScheduledDate", TIMESTAMP(precision=3)))
    op.create_index("CampaignLead_nextScheduledDate_idx", "CampaignLead", ["nextScheduledDate"])


def downgrade() -> None:
    op.drop_index("CampaignLead_nextScheduledDate_idx", table_name="CampaignLead")
    op.drop_column("CampaignLead", "nextScheduledDate")
    op.drop_column("CampaignLead", "currentStepOrder")
    op.drop_column("SequenceStep", "aiInstructions")
    op.drop_column("Campaign", "goal")
