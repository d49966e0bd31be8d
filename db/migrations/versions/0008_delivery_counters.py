"""delivery_counters: one row per (mailbox or campaign, local day) holding the handovers of
that day and the last one's time, so the handover guard checks a daily cap and the mailbox gap
by updating one row instead of counting the day's sends for every send.

Plain-SQL twin: db/sql/delivery_counters.sql.

Revision ID: delivery_counters
Revises: engagement_ingestion
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "delivery_counters"
down_revision: str | None = "engagement_ingestion"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Counters are created by the delivery flow from the day's sends the first time a day is
    # used, so existing rows need no backfill here.
    op.create_table(
        "DeliveryCounter",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("day", TIMESTAMP(precision=3), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lastAt", TIMESTAMP(precision=3)),
        sa.PrimaryKeyConstraint("scope", "key", "day", name=op.f("DeliveryCounter_pkey")),
        sa.CheckConstraint(
            "scope IN ('mailbox', 'campaign')", name=op.f("DeliveryCounter_scope_check")
        ),
        # One hot row per mailbox takes an update per send: leave page room for HOT updates.
        postgresql_with={"fillfactor": 50},
    )


def downgrade() -> None:
    op.drop_table("DeliveryCounter")
