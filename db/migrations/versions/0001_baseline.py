"""Baseline: the tables the web app already had before the AI campaign fields.

Revision ID: baseline
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

revision: str = "baseline"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = True, now: bool = False) -> sa.Column[datetime]:
    default = sa.text("CURRENT_TIMESTAMP") if now else None
    return sa.Column(name, TIMESTAMP(precision=3), nullable=nullable, server_default=default)


def _fk(column: str, table: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=f"{table}_{column}_fkey",
        ondelete=ondelete,
        onupdate="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "Workspace",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        _ts("createdAt", nullable=False, now=True),
        _ts("updatedAt", nullable=False),
        sa.PrimaryKeyConstraint("id", name="Workspace_pkey"),
    )
    op.create_table(
        "Lead",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspaceId", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("firstName", sa.Text()),
        sa.Column("lastName", sa.Text()),
        sa.Column("companyName", sa.Text()),
        sa.Column("title", sa.Text()),
        sa.Column("industry", sa.Text()),
        sa.Column("companySize", sa.Text()),
        sa.Column("website", sa.Text()),
        sa.Column("timezone", sa.Text()),
        sa.Column("customFields", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        _ts("createdAt", nullable=False, now=True),
        _ts("updatedAt", nullable=False),
        sa.PrimaryKeyConstraint("id", name="Lead_pkey"),
        _fk("workspaceId", "Lead", "Workspace"),
    )
    op.create_index("Lead_workspaceId_idx", "Lead", ["workspaceId"])
    op.create_table(
        "Campaign",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspaceId", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="draft"),
        sa.Column("sendingRules", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        _ts("startAt"),
        _ts("createdAt", nullable=False, now=True),
        _ts("updatedAt", nullable=False),
        sa.PrimaryKeyConstraint("id", name="Campaign_pkey"),
        _fk("workspaceId", "Campaign", "Workspace"),
    )
    op.create_index("Campaign_workspaceId_idx", "Campaign", ["workspaceId"])
    op.create_table(
        "SequenceStep",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("campaignId", sa.Text(), nullable=False),
        sa.Column("stepOrder", sa.Integer(), nullable=False),
        sa.Column("delayDays", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("subjectTemplate", sa.Text(), nullable=False),
        sa.Column("bodyTemplate", sa.Text(), nullable=False),
        _ts("createdAt", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="SequenceStep_pkey"),
        _fk("campaignId", "SequenceStep", "Campaign"),
    )
    op.create_table(
        "CampaignLead",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("campaignId", sa.Text(), nullable=False),
        sa.Column("leadId", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="active"),
        sa.Column("stopReason", sa.Text()),
        _ts("createdAt", nullable=False, now=True),
        _ts("updatedAt", nullable=False),
        sa.PrimaryKeyConstraint("id", name="CampaignLead_pkey"),
        _fk("campaignId", "CampaignLead", "Campaign"),
        _fk("leadId", "CampaignLead", "Lead"),
    )
    op.create_index("CampaignLead_leadId_idx", "CampaignLead", ["leadId"])
    op.create_table(
        "GeneratedMessage",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("campaignId", sa.Text(), nullable=False),
        sa.Column("leadId", sa.Text(), nullable=False),
        sa.Column("stepId", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="generated"),
        _ts("createdAt", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="GeneratedMessage_pkey"),
        _fk("campaignId", "GeneratedMessage", "Campaign"),
        _fk("leadId", "GeneratedMessage", "Lead"),
        _fk("stepId", "GeneratedMessage", "SequenceStep"),
    )
    op.create_index("GeneratedMessage_leadId_idx", "GeneratedMessage", ["leadId"])
    op.create_table(
        "EmailSend",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("campaignId", sa.Text(), nullable=False),
        sa.Column("leadId", sa.Text(), nullable=False),
        sa.Column("stepId", sa.Text(), nullable=False),
        sa.Column("generatedMessageId", sa.Text()),
        sa.Column("toEmail", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="scheduled"),
        _ts("scheduledFor"),
        _ts("sentAt"),
        sa.Column("providerMessageId", sa.Text()),
        _ts("createdAt", nullable=False, now=True),
        _ts("updatedAt", nullable=False),
        sa.PrimaryKeyConstraint("id", name="EmailSend_pkey"),
        _fk("campaignId", "EmailSend", "Campaign"),
        _fk("leadId", "EmailSend", "Lead"),
        _fk("stepId", "EmailSend", "SequenceStep"),
        _fk("generatedMessageId", "EmailSend", "GeneratedMessage", ondelete="SET NULL"),
    )
    op.create_index("EmailSend_leadId_idx", "EmailSend", ["leadId"])
    op.create_index("EmailSend_providerMessageId_idx", "EmailSend", ["providerMessageId"])
    op.create_table(
        "EngagementEvent",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("emailSendId", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        _ts("occurredAt", nullable=False),
        sa.Column("metadata", JSONB()),
        _ts("createdAt", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="EngagementEvent_pkey"),
        _fk("emailSendId", "EngagementEvent", "EmailSend"),
    )
    op.create_index("EngagementEvent_emailSendId_idx", "EngagementEvent", ["emailSendId"])


def downgrade() -> None:
    for table in (
        "EngagementEvent",
        "EmailSend",
        "GeneratedMessage",
        "CampaignLead",
        "SequenceStep",
        "Campaign",
        "Lead",
        "Workspace",
    ):
        op.drop_table(table)
