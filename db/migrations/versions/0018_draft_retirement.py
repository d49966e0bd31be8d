"""draft_retirement: a draft written ahead that can no longer be used is retired (`superseded`)
and says why (`GeneratedMessage.statusReason`); a partial index on the `pregenerated` drafts
lets every run of `pregenerate-upcoming-steps` (hourly) find them without reading every message.

Plain-SQL twin: db/sql/draft_retirement.sql.

Revision ID: draft_retirement
Revises: batch_generation
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "draft_retirement"
down_revision: str | None = "batch_generation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("GeneratedMessage", sa.Column("statusReason", sa.Text()))
    op.create_index(
        "GeneratedMessage_pregenerated_idx",
        "GeneratedMessage",
        ["createdAt"],
        postgresql_where=sa.text("status = 'pregenerated'"),
    )


def downgrade() -> None:
    op.drop_index("GeneratedMessage_pregenerated_idx", table_name="GeneratedMessage")
    op.drop_column("GeneratedMessage", "statusReason")
