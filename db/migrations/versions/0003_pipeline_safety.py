"""pipeline_safety: status checks, the uniqueness the pipeline relies on, due indexes, Suppression.

Plain-SQL twin: db/sql/pipeline_safety.sql.

Revision ID: pipeline_safety
Revises: add_ai_campaign_fields
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "pipeline_safety"
down_revision: str | None = "add_ai_campaign_fields"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of core.statuses at this revision; a later value needs a later revision.
CHECKS = {
    ("Campaign", "status"): ("draft", "active", "paused", "completed", "archived"),
    ("CampaignLead", "status"): (
        "active",
        "paused",
        "completed",
        "replied",
        "bounced",
        "unsubscribed",
        "stopped",
        "failed",
    ),
    ("GeneratedMessage", "status"): (
        "generated",
        "pending_review",
        "approved",
        "rejected",
        "superseded",
    ),
    ("EmailSend", "status"): ("scheduled", "sending", "sent", "failed", "cancelled", "unknown"),
    ("EngagementEvent", "type"): (
        "open",
        "click",
        "reply",
        "auto_reply",
        "bounce",
        "unsubscribe",
        "complaint",
    ),
}


def upgrade() -> None:
    for (table, column), values in CHECKS.items():
        allowed = ", ".join(f"'{v}'" for v in values)
        op.create_check_constraint(
            op.f(f"{table}_{column}_check"), table, f'"{column}" IN ({allowed})'
        )
    op.create_check_constraint(
        op.f("SequenceStep_stepOrder_check"), "SequenceStep", '"stepOrder" >= 1'
    )
    op.create_check_constraint(
        op.f("SequenceStep_delayDays_check"), "SequenceStep", '"delayDays" >= 0'
    )

    op.create_unique_constraint(
        "CampaignLead_campaignId_leadId_key", "CampaignLead", ["campaignId", "leadId"]
    )
    op.create_unique_constraint(
        "SequenceStep_campaignId_stepOrder_key", "SequenceStep", ["campaignId", "stepOrder"]
    )
    op.create_unique_constraint(
        "EmailSend_campaignId_leadId_stepId_key", "EmailSend", ["campaignId", "leadId", "stepId"]
    )
    op.create_index(
        "GeneratedMessage_current_key",
        "GeneratedMessage",
        ["campaignId", "leadId", "stepId"],
        unique=True,
        postgresql_where=sa.text("status <> 'superseded'"),
    )
    op.create_index(
        "Lead_workspaceId_email_key", "Lead", ["workspaceId", sa.text("lower(email)")], unique=True
    )
    op.create_index(
        "CampaignLead_due_idx",
        "CampaignLead",
        ["nextScheduledDate"],
        postgresql_where=sa.text("status = 'active' AND \"nextScheduledDate\" IS NOT NULL"),
    )
    op.create_index(
        "EmailSend_due_idx",
        "EmailSend",
        ["scheduledFor"],
        postgresql_where=sa.text("status = 'scheduled'"),
    )

    op.create_table(
        "Suppression",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspaceId", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "createdAt",
            TIMESTAMP(precision=3),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.PrimaryKeyConstraint("id", name="Suppression_pkey"),
        sa.ForeignKeyConstraint(
            ["workspaceId"],
            ["Workspace.id"],
            name="Suppression_workspaceId_fkey",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
    )
    op.create_index(
        "Suppression_workspaceId_email_key",
        "Suppression",
        ["workspaceId", sa.text("lower(email)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("Suppression")
    for index, table in (
        ("EmailSend_due_idx", "EmailSend"),
        ("CampaignLead_due_idx", "CampaignLead"),
        ("Lead_workspaceId_email_key", "Lead"),
        ("GeneratedMessage_current_key", "GeneratedMessage"),
    ):
        op.drop_index(index, table_name=table)
    for name, table in (
        ("EmailSend_campaignId_leadId_stepId_key", "EmailSend"),
        ("SequenceStep_campaignId_stepOrder_key", "SequenceStep"),
        ("CampaignLead_campaignId_leadId_key", "CampaignLead"),
        ("SequenceStep_delayDays_check", "SequenceStep"),
        ("SequenceStep_stepOrder_check", "SequenceStep"),
    ):
        op.drop_constraint(name, table)
    for table, column in CHECKS:
        op.drop_constraint(f"{table}_{column}_check", table)
