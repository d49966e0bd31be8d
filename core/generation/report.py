"""Counting a generation run per campaign, for the run's table artifact and summary."""

from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from core.counting import Tally
from core.generation.approval import ApprovedMessage
from core.generation.due_lead import DueLead
from core.generation.generate import LeadOutcome, OutcomeKind

COLUMNS = (
    "claimed",
    "generated",
    "cache_hits",
    "fell_back",
    "held",
    "failed",
    "scheduled",
    "awaiting_review",
    "released",
    "sent_back",
    "rejected",
)


class CampaignCounts(Tally):
    """One campaign's line in the run's table.

    `awaiting_review` counts the scheduled sends whose message waits for a person; `released`,
    `sent_back` and `rejected` what the run made of the messages people reviewed: approved ones
    given their slot, approved edits the gate refused (pending review again), rejections
    recorded on their lead.
    """

    counters = (*COLUMNS, "llm_calls")

    campaign_id: str
    claimed: int = 0
    generated: int = 0
    cache_hits: int = 0
    fell_back: int = 0
    held: int = 0
    failed: int = 0
    scheduled: int = 0
    awaiting_review: int = 0
    released: int = 0
    sent_back: int = 0
    rejected: int = 0
    llm_calls: int = 0


def count_batch(
    leads: Iterable[DueLead],
    outcomes: Iterable[LeadOutcome],
    *,
    written: set[str],
    failed: set[str],
    awaiting_review: AbstractSet[str] = frozenset(),
) -> dict[str, CampaignCounts]:
    """Counts per campaign for one batch; written are the leads whose send was scheduled, and
    awaiting_review those of them whose message waits for a person."""
    campaign_of = {lead.campaignLeadId: lead.campaignId for lead in leads}
    counts: dict[str, CampaignCounts] = {}
    for outcome in outcomes:
        campaign = campaign_of[outcome.campaignLeadId]
        row = counts.setdefault(campaign, CampaignCounts(campaign_id=campaign))
        row.claimed += 1
        row.llm_calls += outcome.llm_calls
        row.cache_hits += outcome.cache_hit
        row.generated += outcome.kind is OutcomeKind.generated
        row.fell_back += outcome.kind is OutcomeKind.fallback
        if outcome.campaignLeadId in failed:
            row.failed += 1
        elif outcome.kind is OutcomeKind.held:
            row.held += 1
        row.scheduled += outcome.campaignLeadId in written
        row.awaiting_review += outcome.campaignLeadId in awaiting_review
    return counts


def count_reviewed(
    messages: Iterable[ApprovedMessage], *, released: AbstractSet[str], sent_back: AbstractSet[str]
) -> dict[str, CampaignCounts]:
    """Counts per campaign of approved messages released and sent back to review (by send id)."""
    counts: dict[str, CampaignCounts] = {}
    for message in messages:
        campaign = message.lead.campaignId
        row = counts.setdefault(campaign, CampaignCounts(campaign_id=campaign))
        row.released += message.sendId in released
        row.sent_back += message.sendId in sent_back
    return counts


def merge(into: dict[str, CampaignCounts], batch: dict[str, CampaignCounts]) -> None:
    """Add one batch's per-campaign counts to the run's."""
    for campaign, row in batch.items():
        if campaign in into:
            into[campaign].add(row)
        else:
            into[campaign] = row.model_copy()


def totals(counts: dict[str, CampaignCounts]) -> CampaignCounts:
    """All campaigns together."""
    total = CampaignCounts(campaign_id="(all)")
    for row in counts.values():
        total.add(row)
    return total


def summary_markdown(counts: dict[str, CampaignCounts], *, as_of: str, dry_run: bool) -> str:
    """The run's markdown summary: totals first, then one line per campaign."""
    total = totals(counts)
    mode = "dry run: nothing was written" if dry_run else "written"
    lines = [
        f"# process-campaign-sends ({mode})",
        f"Due as of **{as_of}**: claimed {total.claimed}, generated {total.generated} "
        f"({total.cache_hits} from cache, {total.llm_calls} LLM calls), fell back "
        f"{total.fell_back}, held {total.held}, failed {total.failed}, scheduled "
        f"{total.scheduled} ({total.awaiting_review} awaiting review). Reviewed messages: "
        f"released {total.released}, sent back to review {total.sent_back}, rejected "
        f"{total.rejected}.",
        "",
        "| campaign | " + " | ".join(COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]
    for row in sorted(counts.values(), key=lambda r: r.campaign_id):
        values = " | ".join(str(getattr(row, name)) for name in COLUMNS)
        lines.append(f"| {row.campaign_id} | {values} |")
    return "\n".join(lines)
