"""circuit_breakers: a campaign's status carries its reason and the time it last changed (a
breaker or an operator paused it, an operator resumed it), and a partial index finds the last
days' bounces and complaints, which every delivery and ingestion run weighs against the lines.

Plain-SQL twin: db/sql/circuit_breakers.sql.

Revision ID: circuit_breakers
Revises: unknown_sends
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "circuit_breakers"
down_revision: str | None = "unknown_sends"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("Campaign", sa.Column("statusReason", sa.Text()))
    op.add_column("Campaign", sa.Column("statusChangedAt", TIMESTAMP(precision=3)))
    op.create_index(
        "EngagementEvent_breaker_idx",
        "EngagementEvent",
        ["createdAt"],
        postgresql_where=sa.text("type IN ('bounce', 'complaint')"),
    )


def downgrade() -> None:
    op.drop_index("EngagementEvent_breaker_idx", table_name="EngagementEvent")
    op.drop_column("Campaign", "statusChangedAt")
    op.drop_column("Campaign", "statusReason")
