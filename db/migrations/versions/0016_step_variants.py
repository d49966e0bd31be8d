"""step_variants: A/B variants of a sequence step (`SequenceStepVariant`: a key, optional subject
and body templates and AI instructions that override the step's, and a weight), the variant each
message and send was written from (`variantKey`), and a step's A/B test winner once
`sendingRules.abTest.autoSelect` chose one (`variantWinner`, when, and the figures).

Plain-SQL twin: db/sql/step_variants.sql.

Revision ID: step_variants
Revises: machine_events
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

revision: str = "step_variants"
down_revision: str | None = "machine_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "SequenceStepVariant",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("stepId", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("subjectTemplate", sa.Text()),
        sa.Column("bodyTemplate", sa.Text()),
        sa.Column("aiInstructions", sa.Text()),
        sa.Column("weight", sa.Integer(), nullable=False, server_default="1"),
        sa.Column(
            "createdAt",
            TIMESTAMP(precision=3),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column("updatedAt", TIMESTAMP(precision=3), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("SequenceStepVariant_pkey")),
        sa.ForeignKeyConstraint(
            ["stepId"],
            ["SequenceStep.id"],
            name=op.f("SequenceStepVariant_stepId_fkey"),
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.CheckConstraint("weight >= 0", name=op.f("SequenceStepVariant_weight_check")),
    )
    op.create_index(
        "SequenceStepVariant_stepId_key_key",
        "SequenceStepVariant",
        ["stepId", "key"],
        unique=True,
    )
    op.add_column("SequenceStep", sa.Column("variantWinner", sa.Text()))
    op.add_column("SequenceStep", sa.Column("variantWinnerAt", TIMESTAMP(precision=3)))
    op.add_column("SequenceStep", sa.Column("variantWinnerFigures", JSONB()))
    op.add_column("GeneratedMessage", sa.Column("variantKey", sa.Text()))
    op.add_column("EmailSend", sa.Column("variantKey", sa.Text()))


def downgrade() -> None:
    op.drop_column("EmailSend", "variantKey")
    op.drop_column("GeneratedMessage", "variantKey")
    op.drop_column("SequenceStep", "variantWinnerFigures")
    op.drop_column("SequenceStep", "variantWinnerAt")
    op.drop_column("SequenceStep", "variantWinner")
    op.drop_table("SequenceStepVariant")
