"""unknown_sends: a partial index on the `unknown` sends by handover time, so every delivery run
finds the sends it reconciles from their mailboxes' Sent folders without reading sent history.

Plain-SQL twin: db/sql/unknown_sends.sql.

Revision ID: unknown_sends
Revises: mailboxes
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "unknown_sends"
down_revision: str | None = "mailboxes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "EmailSend_unknown_idx",
        "EmailSend",
        ["attemptedAt"],
        postgresql_where=sa.text("status = 'unknown'"),
    )


def downgrade() -> None:
    op.drop_index("EmailSend_unknown_idx", table_name="EmailSend")
