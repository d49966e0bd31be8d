"""delivery_claims: EmailSend leases for the delivery flow, delivery bookkeeping (attempts, the
reason of the last status, the sending mailbox, when the handover began), and the indexes that
count a mailbox's and a campaign's sends of the day.

Plain-SQL twin: db/sql/delivery_claims.sql.

Revision ID: delivery_claims
Revises: campaign_lead_fillfactor
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "delivery_claims"
down_revision: str | None = "campaign_lead_fillfactor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ATTEMPTED = sa.text('"attemptedAt" IS NOT NULL')


def _send_columns() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("claimedBy", sa.Text()),
        sa.Column("claimedUntil", TIMESTAMP(precision=3)),
        sa.Column("claimToken", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("statusReason", sa.Text()),
        sa.Column("mailbox", sa.Text()),
        sa.Column("attemptedAt", TIMESTAMP(precision=3)),
    )


def upgrade() -> None:
    for column in _send_columns():
        op.add_column("EmailSend", column)
    op.create_index(
        "EmailSend_mailbox_attemptedAt_idx",
        "EmailSend",
        ["mailbox", "attemptedAt"],
        postgresql_where=_ATTEMPTED,
    )
    op.create_index(
        "EmailSend_campaignId_attemptedAt_idx",
        "EmailSend",
        ["campaignId", "attemptedAt"],
        postgresql_where=_ATTEMPTED,
    )
    op.create_index(
        "EmailSend_sending_idx",
        "EmailSend",
        ["claimedUntil"],
        postgresql_where=sa.text("status = 'sending'"),
    )


def downgrade() -> None:
    op.drop_index("EmailSend_sending_idx", table_name="EmailSend")
    op.drop_index("EmailSend_campaignId_attemptedAt_idx", table_name="EmailSend")
    op.drop_index("EmailSend_mailbox_attemptedAt_idx", table_name="EmailSend")
    for column in reversed(_send_columns()):
        op.drop_column("EmailSend", column.name)
