"""generation_claims: CampaignLead leases (claimedBy/claimedUntil/claimToken), hold bookkeeping,
and the model, tokens, latency and cost of each GeneratedMessage.

Plain-SQL twin: db/sql/generation_claims.sql.

Revision ID: generation_claims
Revises: pipeline_safety
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "generation_claims"
down_revision: str | None = "pipeline_safety"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _lead_columns() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("claimedBy", sa.Text()),
        sa.Column("claimedUntil", TIMESTAMP(precision=3)),
        sa.Column("claimToken", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lastError", sa.Text()),
    )


def _message_columns() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("model", sa.Text()),
        sa.Column("promptVersion", sa.Text()),
        sa.Column("inputHash", sa.Text()),
        sa.Column("promptTokens", sa.Integer()),
        sa.Column("completionTokens", sa.Integer()),
        sa.Column("latencyMs", sa.Integer()),
        sa.Column("costUsd", sa.Numeric(12, 6)),
        sa.Column("fallbackReason", sa.Text()),
    )


def upgrade() -> None:
    for column in _lead_columns():
        op.add_column("CampaignLead", column)
    for column in _message_columns():
        op.add_column("GeneratedMessage", column)


def downgrade() -> None:
    for column in _message_columns():
        op.drop_column("GeneratedMessage", column.name)
    for column in _lead_columns():
        op.drop_column("CampaignLead", column.name)
