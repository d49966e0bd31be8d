"""mailboxes: a workspace's sending mailboxes, each with its own SMTP and IMAP login (password
references only, never a secret), daily limit, warm-up ramp, status, and the checkpoint of the
incremental IMAP reader.

Plain-SQL twin: db/sql/mailboxes.sql.

Revision ID: mailboxes
Revises: lead_email_domain
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "mailboxes"
down_revision: str | None = "lead_email_domain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "Mailbox",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("workspaceId", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("smtpHost", sa.Text(), nullable=False),
        sa.Column("smtpPort", sa.Integer(), nullable=False, server_default="587"),
        sa.Column("smtpSecurity", sa.Text(), nullable=False, server_default="starttls"),
        sa.Column("smtpUsername", sa.Text(), nullable=False),
        sa.Column("smtpPasswordRef", sa.Text(), nullable=False),
        sa.Column("imapHost", sa.Text()),
        sa.Column("imapPort", sa.Integer()),
        sa.Column("imapSsl", sa.Boolean()),
        sa.Column("imapUsername", sa.Text()),
        sa.Column("imapPasswordRef", sa.Text()),
        sa.Column("imapFolder", sa.Text()),
        sa.Column("imapUidValidity", sa.BigInteger()),
        sa.Column("imapLastUid", sa.BigInteger()),
        sa.Column("dailyLimit", sa.Integer(), nullable=False, server_default="40"),
        sa.Column("warmupStart", sa.Integer(), nullable=False, server_default="5"),
        sa.Column("warmupIncrement", sa.Integer(), nullable=False, server_default="3"),
        sa.Column(
            "warmupStartedAt",
            TIMESTAMP(precision=3),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column("status", sa.Text(), nullable=False, server_default="active"),
        sa.Column("statusReason", sa.Text()),
        sa.Column("statusChangedAt", TIMESTAMP(precision=3)),
        sa.Column(
            "createdAt",
            TIMESTAMP(precision=3),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column("updatedAt", TIMESTAMP(precision=3), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("Mailbox_pkey")),
        sa.ForeignKeyConstraint(
            ["workspaceId"],
            ["Workspace.id"],
            name=op.f("Mailbox_workspaceId_fkey"),
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'disconnected')", name=op.f("Mailbox_status_check")
        ),
        sa.CheckConstraint(
            "\"smtpSecurity\" IN ('starttls', 'ssl', 'none')",
            name=op.f("Mailbox_smtpSecurity_check"),
        ),
        sa.CheckConstraint('"dailyLimit" >= 1', name=op.f("Mailbox_dailyLimit_check")),
        sa.CheckConstraint('"warmupStart" >= 1', name=op.f("Mailbox_warmupStart_check")),
        sa.CheckConstraint('"warmupIncrement" >= 0', name=op.f("Mailbox_warmupIncrement_check")),
    )
    op.create_index(
        "Mailbox_workspaceId_email_key",
        "Mailbox",
        ["workspaceId", sa.text("lower(email)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("Mailbox")
