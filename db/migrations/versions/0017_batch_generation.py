"""batch_generation: drafts written ahead through the Batch API at half price. A generated
message may be `pregenerated` (no send yet) and records its cached prompt tokens and their
cost (`cachedTokens`, `cachedCostUsd`) and the rate it was billed at (`pricing`);
`GenerationBatch` and `GenerationBatchRequest` record each batch and each lead's request in
it, the request's `customId` unique so no lead's step is submitted twice for the same input.

Plain-SQL twin: db/sql/batch_generation.sql.

Revision ID: batch_generation
Revises: machine_events
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "batch_generation"
down_revision: str | None = "step_variants"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of core.statuses at this revision; a later value needs a later revision.
_MESSAGE_STATUSES = (
    "'generated', 'pending_review', 'approved', 'rejected', 'superseded', 'pregenerated'"
)
_OLD_MESSAGE_STATUSES = "'generated', 'pending_review', 'approved', 'rejected', 'superseded'"
_PRICINGS = "'standard', 'flex', 'batch'"
_BATCH_STATUSES = "'preparing', 'submitted', 'completed', 'expired', 'failed', 'cancelled'"
_REQUEST_STATUSES = "'pending', 'drafted', 'rejected', 'failed', 'stale', 'unused'"


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"{table}_{column}_fkey"),
        ondelete=ondelete,
        onupdate="CASCADE",
    )


def _created() -> sa.Column[object]:
    return sa.Column(
        "createdAt",
        TIMESTAMP(precision=3),
        nullable=False,
        server_default=sa.text("CURRENT_TIMESTAMP"),
    )


def upgrade() -> None:
    op.drop_constraint(op.f("GeneratedMessage_status_check"), "GeneratedMessage", type_="check")
    op.create_check_constraint(
        op.f("GeneratedMessage_status_check"),
        "GeneratedMessage",
        f'"status" IN ({_MESSAGE_STATUSES})',
    )
    op.add_column("GeneratedMessage", sa.Column("cachedTokens", sa.Integer()))
    op.add_column("GeneratedMessage", sa.Column("cachedCostUsd", sa.Numeric(12, 6)))
    op.add_column("GeneratedMessage", sa.Column("pricing", sa.Text()))
    op.create_check_constraint(
        op.f("GeneratedMessage_pricing_check"), "GeneratedMessage", f'"pricing" IN ({_PRICINGS})'
    )
    op.create_table(
        "GenerationBatch",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("openaiBatchId", sa.Text()),
        sa.Column("inputFileId", sa.Text()),
        sa.Column("status", sa.Text(), nullable=False, server_default="preparing"),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("requestCount", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completedCount", sa.Integer()),
        sa.Column("failedCount", sa.Integer()),
        sa.Column("error", sa.Text()),
        _created(),
        sa.Column("submittedAt", TIMESTAMP(precision=3)),
        sa.Column("completedAt", TIMESTAMP(precision=3)),
        sa.PrimaryKeyConstraint("id", name=op.f("GenerationBatch_pkey")),
        sa.CheckConstraint(
            f'"status" IN ({_BATCH_STATUSES})', name=op.f("GenerationBatch_status_check")
        ),
    )
    op.create_index(
        "GenerationBatch_openaiBatchId_key", "GenerationBatch", ["openaiBatchId"], unique=True
    )
    op.create_index(
        "GenerationBatch_open_idx",
        "GenerationBatch",
        ["createdAt"],
        postgresql_where=sa.text("status IN ('preparing', 'submitted')"),
    )
    op.create_table(
        "GenerationBatchRequest",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("batchId", sa.Text(), nullable=False),
        sa.Column("customId", sa.Text(), nullable=False),
        sa.Column("campaignLeadId", sa.Text(), nullable=False),
        sa.Column("stepId", sa.Text(), nullable=False),
        sa.Column("inputHash", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("error", sa.Text()),
        sa.Column("generatedMessageId", sa.Text()),
        _created(),
        sa.Column("completedAt", TIMESTAMP(precision=3)),
        sa.PrimaryKeyConstraint("id", name=op.f("GenerationBatchRequest_pkey")),
        _fk("GenerationBatchRequest", "batchId", "GenerationBatch"),
        _fk("GenerationBatchRequest", "campaignLeadId", "CampaignLead"),
        _fk("GenerationBatchRequest", "stepId", "SequenceStep"),
        _fk("GenerationBatchRequest", "generatedMessageId", "GeneratedMessage", "SET NULL"),
        sa.CheckConstraint(
            f'"status" IN ({_REQUEST_STATUSES})', name=op.f("GenerationBatchRequest_status_check")
        ),
    )
    op.create_index(
        "GenerationBatchRequest_customId_key", "GenerationBatchRequest", ["customId"], unique=True
    )
    op.create_index("GenerationBatchRequest_batchId_idx", "GenerationBatchRequest", ["batchId"])
    op.create_index(
        "GenerationBatchRequest_campaignLeadId_stepId_idx",
        "GenerationBatchRequest",
        ["campaignLeadId", "stepId"],
    )


def downgrade() -> None:
    op.drop_table("GenerationBatchRequest")
    op.drop_table("GenerationBatch")
    op.drop_constraint(op.f("GeneratedMessage_pricing_check"), "GeneratedMessage", type_="check")
    op.drop_column("GeneratedMessage", "pricing")
    op.drop_column("GeneratedMessage", "cachedCostUsd")
    op.drop_column("GeneratedMessage", "cachedTokens")
    op.execute(
        """UPDATE "GeneratedMessage" SET status = 'superseded' WHERE status = 'pregenerated'"""
    )
    op.drop_constraint(op.f("GeneratedMessage_status_check"), "GeneratedMessage", type_="check")
    op.create_check_constraint(
        op.f("GeneratedMessage_status_check"),
        "GeneratedMessage",
        f'"status" IN ({_OLD_MESSAGE_STATUSES})',
    )
