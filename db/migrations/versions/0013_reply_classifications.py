"""reply_classifications: what each reply (or auto-reply) event says and what it did: its
intent, confidence, return date, referral and summary, how it was classified (the LLM's model,
prompt version, tokens and cost, or rules), and the action taken. Unique per event, so a reply
ingested again is never acted on twice.

Plain-SQL twin: db/sql/reply_classifications.sql.

Revision ID: reply_classifications
Revises: unknown_sends
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "reply_classifications"
down_revision: str | None = "circuit_breakers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INTENTS = (
    "'interested', 'meeting_request', 'not_interested', 'not_now', 'out_of_office', "
    "'referral', 'unsubscribe', 'auto_reply', 'other'"
)
_ACTIONS = "'stopped', 'rescheduled', 'referred', 'unsubscribed', 'recorded'"


def upgrade() -> None:
    op.create_table(
        "ReplyClassification",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("engagementEventId", sa.Text(), nullable=False),
        sa.Column("intent", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("returnDate", sa.Date()),
        sa.Column("referralEmail", sa.Text()),
        sa.Column("referralName", sa.Text()),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("model", sa.Text()),
        sa.Column("promptVersion", sa.Text()),
        sa.Column("inputHash", sa.Text()),
        sa.Column("promptTokens", sa.Integer()),
        sa.Column("completionTokens", sa.Integer()),
        sa.Column("latencyMs", sa.Integer()),
        sa.Column("costUsd", sa.Numeric(12, 6)),
        sa.Column("note", sa.Text()),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actionDetail", sa.Text()),
        sa.Column("resumeAt", TIMESTAMP(precision=3)),
        sa.Column("referralLeadId", sa.Text()),
        sa.Column(
            "createdAt",
            TIMESTAMP(precision=3),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("ReplyClassification_pkey")),
        sa.ForeignKeyConstraint(
            ["engagementEventId"],
            ["EngagementEvent.id"],
            name=op.f("ReplyClassification_engagementEventId_fkey"),
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["referralLeadId"],
            ["Lead.id"],
            name=op.f("ReplyClassification_referralLeadId_fkey"),
            ondelete="SET NULL",
            onupdate="CASCADE",
        ),
        sa.CheckConstraint(
            f"intent IN ({_INTENTS})", name=op.f("ReplyClassification_intent_check")
        ),
        sa.CheckConstraint(
            "method IN ('llm', 'rules')", name=op.f("ReplyClassification_method_check")
        ),
        sa.CheckConstraint(
            f"action IN ({_ACTIONS})", name=op.f("ReplyClassification_action_check")
        ),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1",
            name=op.f("ReplyClassification_confidence_check"),
        ),
    )
    op.create_index(
        "ReplyClassification_engagementEventId_key",
        "ReplyClassification",
        ["engagementEventId"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("ReplyClassification")
