"""review_before_send: a generated message can wait for a person (`pending_review`), and says
why it waits (`reviewReason`), what the person said (`reviewNote`) and when (`reviewedAt`); two
partial indexes find the sends awaiting review and the messages pending it, which every
generation run, `review list` and the campaign report read.

Plain-SQL twin: db/sql/review_before_send.sql.

Revision ID: review_before_send
Revises: reply_classifications
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "review_before_send"
down_revision: str | None = "reply_classifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("GeneratedMessage", sa.Column("reviewReason", sa.Text()))
    op.add_column("GeneratedMessage", sa.Column("reviewNote", sa.Text()))
    op.add_column("GeneratedMessage", sa.Column("reviewedAt", TIMESTAMP(precision=3)))
    op.create_index(
        "GeneratedMessage_pending_review_idx",
        "GeneratedMessage",
        ["campaignId", "createdAt"],
        postgresql_where=sa.text("status = 'pending_review'"),
    )
    op.create_index(
        "EmailSend_awaiting_review_idx",
        "EmailSend",
        ["campaignId"],
        postgresql_where=sa.text("status = 'scheduled' AND \"scheduledFor\" IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("EmailSend_awaiting_review_idx", table_name="EmailSend")
    op.drop_index("GeneratedMessage_pending_review_idx", table_name="GeneratedMessage")
    op.drop_column("GeneratedMessage", "reviewedAt")
    op.drop_column("GeneratedMessage", "reviewNote")
    op.drop_column("GeneratedMessage", "reviewReason")
