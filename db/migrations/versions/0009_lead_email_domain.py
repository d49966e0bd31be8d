"""lead_email_domain: an index on each Lead's email domain within its workspace, so a reply
under stopOnCompanyReply finds the colleagues at that domain without reading every enrolment
of the campaign.

Plain-SQL twin: db/sql/lead_email_domain.sql.

Revision ID: lead_email_domain
Revises: delivery_counters
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "lead_email_domain"
down_revision: str | None = "delivery_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "Lead_workspaceId_emailDomain_idx",
        "Lead",
        ["workspaceId", sa.text("split_part(lower(email), '@', 2)")],
    )


def downgrade() -> None:
    op.drop_index("Lead_workspaceId_emailDomain_idx", table_name="Lead")
