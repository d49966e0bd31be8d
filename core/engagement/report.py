"""Counting an ingestion run: events by type and source, new versus duplicate, quarantined,
malformed and ignored records, and leads stopped by rule. No addresses, no bodies.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from core.counting import Tally
from core.engagement.events import Malformed, NormalisedEvent

# The artifact lists this many malformed records; the count covers them all.
MALFORMED_SHOWN = 500


class IngestColumn(StrEnum):
    """What became of an event: new, already ingested, or kept aside with no matching send."""

    new = "new"
    duplicate = "duplicate"
    quarantined = "quarantined"


class TypeCounts(Tally):
    """One (source, type) line of the run's table."""

    counters = tuple(IngestColumn)

    source: str
    type: str
    new: int = 0
    duplicate: int = 0
    quarantined: int = 0


class MailboxOutcome(StrEnum):
    """What a run did with one sending mailbox's IMAP folder."""

    read = "read"  # new messages were fetched
    unchanged = "unchanged"  # UIDNEXT said nothing was new: no SEARCH, no FETCH
    skipped = "skipped"  # unreachable, refused, or its password reference did not resolve


class MailboxRead(BaseModel):
    """One mailbox's line in the run's mailbox table; `answer` is the server's (or why not)."""

    email: str
    workspace: str
    outcome: MailboxOutcome
    messages: int = 0
    answer: str = ""


class IngestReport(BaseModel):
    """Everything a run (or one chunk of it) did."""

    rows: dict[str, TypeCounts] = Field(default_factory=dict)
    malformed: list[Malformed] = Field(default_factory=list)
    malformed_total: int = 0
    ignored: Counter[str] = Field(default_factory=Counter)
    stopped: Counter[str] = Field(default_factory=Counter)
    cancelled: int = 0
    mailboxes: list[MailboxRead] = Field(default_factory=list)
    # New replies and auto-replies by intent, what they did, and leads enrolled by referral.
    intents: Counter[str] = Field(default_factory=Counter)
    reply_actions: Counter[str] = Field(default_factory=Counter)
    referred: int = 0
    # Opens and clicks taken for a machine's, by rule (core.engagement.machine).
    machine: Counter[str] = Field(default_factory=Counter)

    def count(self, source: str, kind: str, column: IngestColumn, n: int) -> None:
        """Add n events to a column of their (source, type) line."""
        row = self.rows.setdefault(f"{source}\x00{kind}", TypeCounts(source=source, type=kind))
        row.bump(column, n)

    def add_malformed(self, record: Malformed) -> None:
        """Keep a malformed record for the artifact (the first MALFORMED_SHOWN of them)."""
        self.malformed_total += 1
        if len(self.malformed) < MALFORMED_SHOWN:
            self.malformed.append(record)

    def merge(self, other: "IngestReport") -> None:
        """Fold another chunk's report into this one."""
        for key, theirs in other.rows.items():
            mine = self.rows.setdefault(key, TypeCounts(source=theirs.source, type=theirs.type))
            mine.add(theirs)
        for record in other.malformed:
            if len(self.malformed) < MALFORMED_SHOWN:
                self.malformed.append(record)
        self.malformed_total += other.malformed_total
        self.ignored.update(other.ignored)
        self.stopped.update(other.stopped)
        self.cancelled += other.cancelled
        self.intents.update(other.intents)
        self.reply_actions.update(other.reply_actions)
        self.referred += other.referred
        self.machine.update(other.machine)

    def total(self, column: IngestColumn) -> int:
        """One column summed over every line."""
        return sum(row.count_of(column) for row in self.rows.values())

    def table(self) -> list[dict[str, object]]:
        """Rows for the run's table artifact."""
        return [
            row.model_dump() for row in sorted(self.rows.values(), key=lambda r: (r.source, r.type))
        ]

    def summary_markdown(self, *, dry_run: bool) -> str:
        """A short account of the run for its markdown artifact."""
        head = "Dry run: nothing was written." if dry_run else "Ingestion run."
        lines = [
            "# ingest-engagement-events",
            "",
            head,
            "",
            f"- new events: {self.total(IngestColumn.new)}",
            f"- duplicates (already ingested): {self.total(IngestColumn.duplicate)}",
            f"- quarantined (no matching send): {self.total(IngestColumn.quarantined)}",
            f"- malformed records: {self.malformed_total}",
            f"- ignored records (events not stored, e.g. deliveries): {sum(self.ignored.values())}",
            f"- pending sends cancelled: {self.cancelled}",
        ]
        if self.mailboxes:
            skipped = [m.email for m in self.mailboxes if m.outcome is MailboxOutcome.skipped]
            lines.append(
                f"- sending mailboxes read: {len(self.mailboxes) - len(skipped)}, "
                f"skipped: {len(skipped)}" + (f" ({', '.join(skipped)})" if skipped else "")
            )
        if self.stopped:
            lines += ["", "## Enrolments stopped, by rule", ""]
            lines += [f"- {rule}: {n}" for rule, n in sorted(self.stopped.items())]
        if self.machine:
            lines += ["", "## Opens and clicks taken for a machine's, by rule", ""]
            lines += [f"- {rule}: {n}" for rule, n in sorted(self.machine.items())]
        if self.intents:
            lines += ["", "## New replies, by intent", ""]
            lines += [f"- {intent}: {n}" for intent, n in sorted(self.intents.items())]
            lines += ["", "## What they did", ""]
            lines += [f"- {action}: {n}" for action, n in sorted(self.reply_actions.items())]
            lines.append(f"- leads enrolled by referral: {self.referred}")
        return "\n".join(lines) + "\n"


def event_chunks(
    records: Iterable[object],
    report: IngestReport,
    *,
    size: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[list[NormalisedEvent]]:
    """Events of a source in chunks of size, counting malformed and ignored records on the way.

    Records are `NormalisedEvent`, `Malformed`, or anything with a `reason` (ignored records)
    or None (a message that is nothing to record). Events outside [since, until) are ignored.
    """
    chunk: list[NormalisedEvent] = []
    for record in records:
        if isinstance(record, NormalisedEvent):
            if (since and record.occurred_at < since) or (until and record.occurred_at >= until):
                report.ignored["outside since/until"] += 1
                continue
            chunk.append(record)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        elif isinstance(record, Malformed):
            report.add_malformed(record)
        elif record is None:
            report.ignored["not an engagement event"] += 1
        else:
            report.ignored[str(getattr(record, "reason", "ignored"))] += 1
    if chunk:
        yield chunk
