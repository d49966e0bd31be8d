"""Counting a delivery run per campaign and mailbox, for the run's artifacts and log lines.

Reasons name rules and SMTP replies, never addresses or bodies, so they are safe at INFO.
"""

from collections import Counter
from enum import StrEnum

from pydantic import BaseModel, Field

from core.counting import Tally
from core.delivery.plan import Action, Decision, DueSend


class DeliveryColumn(StrEnum):
    """What happened to a send in this run: one column of the run's table."""

    sent = "sent"
    retried = "retried"
    deferred = "deferred"
    cancelled = "cancelled"
    failed = "failed"
    bounced = "bounced"
    unknown = "unknown"


COLUMNS: tuple[DeliveryColumn, ...] = tuple(DeliveryColumn)


class DeliveryCounts(Tally):
    """One (campaign, mailbox) line of the run's table."""

    counters = tuple(COLUMNS)

    campaign_id: str
    mailbox: str = "-"
    sent: int = 0
    retried: int = 0  # refused with a 4xx, scheduled again with backoff
    deferred: int = 0  # moved to the next allowed moment (window, cap, gap, pause)
    cancelled: int = 0  # the lead stopped, or the campaign ended
    failed: int = 0  # permanent, not the address's fault, or out of attempts
    bounced: int = 0  # permanent for the recipient: failed, lead bounced, address suppressed
    unknown: int = 0  # may or may not have left; never resent automatically
    reasons: Counter[str] = Field(default_factory=Counter)

    def reasons_of(self, column: DeliveryColumn) -> Counter[str]:
        """Why this line's sends went to one column, and how many each time."""
        prefix = f"{column}: "
        return Counter(
            {
                reason.removeprefix(prefix): n
                for reason, n in self.reasons.items()
                if reason.startswith(prefix)
            }
        )


class UnknownSend(BaseModel):
    """A send an operator must look at: the handover began and its outcome is not known."""

    send_id: str
    campaign_id: str
    mailbox: str | None
    reason: str


class PlannedSend(BaseModel):
    """A dry run's line: what would happen to one send."""

    send_id: str
    campaign_id: str
    mailbox: str
    action: str
    at: str
    reason: str


def planned_sends(decisions: list[Decision], sends: list[DueSend]) -> list[PlannedSend]:
    """A dry run's plan as table lines: which sends would leave when, and why others would wait."""
    campaign_of = {s.sendId: s.campaignId for s in sends}
    return [
        PlannedSend(
            send_id=d.send_id,
            campaign_id=campaign_of[d.send_id],
            mailbox=d.mailbox.email if d.mailbox else "-",
            action=d.action.value,
            at=d.at.isoformat() if d.at else "",
            reason=d.reason or "",
        )
        for d in decisions
    ]


# A dry run's plan counted as the run would count it: `sent` is what would be sent.
PLANNED_COLUMNS = {
    Action.deliver: DeliveryColumn.sent,
    Action.defer: DeliveryColumn.deferred,
    Action.cancel: DeliveryColumn.cancelled,
    Action.fail: DeliveryColumn.failed,
}


class DeliveryReport(BaseModel):
    """Everything a run (or one batch of it) did."""

    rows: dict[str, DeliveryCounts] = Field(default_factory=dict)
    unknown: list[UnknownSend] = Field(default_factory=list)

    def count(
        self,
        campaign_id: str,
        mailbox: str | None,
        column: DeliveryColumn,
        reason: str | None = None,
    ) -> None:
        """Add one send to a column, with why for anything but `sent`."""
        key = f"{campaign_id}\x00{mailbox or '-'}"
        row = self.rows.setdefault(
            key, DeliveryCounts(campaign_id=campaign_id, mailbox=mailbox or "-")
        )
        row.bump(column)
        if reason:
            row.reasons[f"{column}: {reason}"] += 1

    def merge(self, other: "DeliveryReport") -> None:
        """Fold another batch's report into this one."""
        for key, theirs in other.rows.items():
            mine = self.rows.setdefault(
                key, DeliveryCounts(campaign_id=theirs.campaign_id, mailbox=theirs.mailbox)
            )
            mine.add(theirs)
            mine.reasons.update(theirs.reasons)
        self.unknown.extend(other.unknown)

    def total(self, column: DeliveryColumn) -> int:
        """One column summed over every line."""
        return sum(row.count_of(column) for row in self.rows.values())

    def table(self) -> list[dict[str, str | int]]:
        """Rows for a Prefect table artifact, sorted, with the reasons as one readable cell."""
        rows = []
        for row in sorted(self.rows.values(), key=lambda r: (r.campaign_id, r.mailbox)):
            why = "; ".join(f"{reason} ×{n}" for reason, n in sorted(row.reasons.items()))
            rows.append(
                {"campaign_id": row.campaign_id, "mailbox": row.mailbox}
                | {column.value: row.count_of(column) for column in COLUMNS}
                | {"why": why}
            )
        return rows


def planned_report(plan: list[PlannedSend]) -> DeliveryReport:
    """A dry run's plan as a run's report, so its tables are the ones a real run shows."""
    report = DeliveryReport()
    for line in plan:
        column = PLANNED_COLUMNS[Action(line.action)]
        report.count(line.campaign_id, line.mailbox, column, line.reason or None)
    return report


def summary_markdown(report: DeliveryReport, *, cutoff: str, dry_run: bool) -> str:
    """A short account of the run for its markdown artifact."""
    head = "Dry run: nothing was sent or written." if dry_run else "Delivery run."
    lines = [f"# send-scheduled-emails, due as of {cutoff}", "", head, ""]
    lines += [f"- {column}: {report.total(column)}" for column in COLUMNS]
    if report.unknown:
        lines += [
            "",
            "## Needs review: outcome unknown",
            "",
            "These handovers began and their result was never recorded. They are never resent"
            " automatically: check the mailbox's sent folder or the provider's log, then set"
            " the row to `sent`, or back to `scheduled` to send it again.",
            "",
        ]
        lines += [
            f"- `{u.send_id}` (campaign `{u.campaign_id}`): {u.reason}" for u in report.unknown
        ]
    return "\n".join(lines) + "\n"
