"""The task that reads, once at the end of a `send-scheduled-emails` run, what its per-mailbox
table needs from the database: two small statements in one read-only transaction."""

from sqlalchemy.orm import Session

from core.delivery.mailbox_report import MailboxFacts, counting_days
from core.delivery.report import DeliveryReport
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.run_mailboxes import read_campaign_senders, read_mailbox_standings
from tasks.database import database_task, in_transaction


@database_task("read-run-mailboxes")
async def read_mailbox_facts(database: DatabaseConfig, report: DeliveryReport) -> MailboxFacts:
    """The workspace and rules of the report's campaigns, and the standing of each mailbox
    they sent from (its row, today's count, 7 days' health)."""
    now = utcnow()

    def read(session: Session) -> MailboxFacts:
        campaign_ids = {line.campaign_id for line in report.rows.values()}
        campaigns = read_campaign_senders(session, campaign_ids)
        days = counting_days(report, campaigns, now)
        standings = read_mailbox_standings(session, days, now=now)
        return MailboxFacts(at=now, campaigns=campaigns, standings=standings)

    # Rolled back: it only reads.
    return await in_transaction(database, read, rollback=True)
