"""machine_events: every open and click says whether a machine made it (`isMachine`) and which
rule said so (`machineReason`): the provider's own flag, Apple Mail Privacy Protection, a
scanner's user agent, a click too soon after delivery, or links clicked together. Reports,
rates and the follow-up thread count human events only.

`isMachine` is NOT NULL DEFAULT false: false means no rule flagged the event, which is what
every row written before this revision, and every row another writer (the web app) inserts
without the column, says. A constant default adds the column without rewriting the table.

Plain-SQL twin: db/sql/machine_events.sql.

Revision ID: machine_events
Revises: review_before_send
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "machine_events"
down_revision: str | None = "review_before_send"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "EngagementEvent",
        sa.Column("isMachine", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("EngagementEvent", sa.Column("machineReason", sa.Text()))


def downgrade() -> None:
    op.drop_column("EngagementEvent", "machineReason")
    op.drop_column("EngagementEvent", "isMachine")
