"""engagement_ingestion: deduplicated EngagementEvents, the webhook inbox, the quarantine for
events that match no send, and a soft-bounce count per enrolment.

Plain-SQL twin: db/sql/engagement_ingestion.sql.

Revision ID: engagement_ingestion
Revises: delivery_claims
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

revision: str = "engagement_ingestion"
down_revision: str | None = "delivery_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.add_column("EngagementEvent", sa.Column("dedupeKey", sa.Text()))
    op.add_column("EngagementEvent", sa.Column("source", sa.Text()))
    op.create_index("EngagementEvent_dedupeKey_key", "EngagementEvent", ["dedupeKey"], unique=True)
    # Events that carry only an address (a reply without threading headers) find their send here.
    op.create_index("EmailSend_lower_toEmail_idx", "EmailSend", [sa.text('lower("toEmail")')])
    op.add_column(
        "CampaignLead",
        sa.Column("softBounces", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "EngagementInbox",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("replayKey", sa.Text()),
        sa.Column("receivedAt", TIMESTAMP(precision=3), nullable=False, server_default=_NOW),
        sa.Column("processedAt", TIMESTAMP(precision=3)),
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="EngagementInbox_pkey"),
    )
    op.create_index(
        "EngagementInbox_provider_replayKey_key",
        "EngagementInbox",
        ["provider", "replayKey"],
        unique=True,
    )
    op.create_index(
        "EngagementInbox_pending_idx",
        "EngagementInbox",
        ["receivedAt"],
        postgresql_where=sa.text('"processedAt" IS NULL'),
    )
    op.create_table(
        "EngagementQuarantine",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("dedupeKey", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("occurredAt", TIMESTAMP(precision=3)),
        sa.Column("providerMessageId", sa.Text()),
        sa.Column("email", sa.Text()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", JSONB()),
        sa.Column("createdAt", TIMESTAMP(precision=3), nullable=False, server_default=_NOW),
        sa.Column("resolvedAt", TIMESTAMP(precision=3)),
        sa.PrimaryKeyConstraint("id", name="EngagementQuarantine_pkey"),
    )
    op.create_index(
        "EngagementQuarantine_dedupeKey_key", "EngagementQuarantine", ["dedupeKey"], unique=True
    )


def downgrade() -> None:
    op.drop_table("EngagementQuarantine")
    op.drop_table("EngagementInbox")
    op.drop_column("CampaignLead", "softBounces")
    op.drop_index("EmailSend_lower_toEmail_idx", table_name="EmailSend")
    op.drop_index("EngagementEvent_dedupeKey_key", table_name="EngagementEvent")
    op.drop_column("EngagementEvent", "source")
    op.drop_column("EngagementEvent", "dedupeKey")
