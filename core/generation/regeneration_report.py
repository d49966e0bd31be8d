"""Counting a step backfill of `process-campaign-sends`, for its table artifact and summary."""

from collections.abc import Set as AbstractSet

from core.counting import Tally
from core.generation.generate import LeadOutcome, OutcomeKind
from core.generation.regeneration import StepSend

COLUMNS = (
    "claimed",
    "regenerated",
    "unchanged",
    "cache_hits",
    "fell_back",
    "held",
    "kept_for_review",
    "busy",
    "changed",
    "not_scheduled",
)


class StepCounts(Tally):
    """One campaign step's line: what the backfill did with each of the step's sends.

    Every send of the step lands in exactly one of: regenerated, unchanged, held (claimed and
    kept their previous message), kept_for_review (released for delivery, so it kept its
    message rather than wait for a review of the new one), busy (claimed by another run, a
    delivery or another backfill, when this run reached them), changed (handed over, cancelled
    or taken over while being regenerated) or not_scheduled (already sending, sent, unknown,
    failed or cancelled). `fell_back` and `cache_hits` count within regenerated.
    """

    counters = (*COLUMNS, "llm_calls")

    campaign_id: str
    step: int
    claimed: int = 0
    regenerated: int = 0
    unchanged: int = 0
    cache_hits: int = 0
    fell_back: int = 0
    held: int = 0
    kept_for_review: int = 0
    busy: int = 0
    changed: int = 0
    not_scheduled: int = 0
    llm_calls: int = 0

    @property
    def skipped(self) -> int:
        """Sends left alone because they were sent, busy or changed meanwhile."""
        return self.busy + self.changed + self.not_scheduled


def count_batch(
    campaign_id: str,
    step: int,
    sends: list[StepSend],
    outcomes: list[LeadOutcome],
    *,
    unchanged: int,
    written: set[str] | None,
    kept_for_review: AbstractSet[str] = frozenset(),
) -> StepCounts:
    """One batch's counts; `written` are the send ids repointed, None in a dry run (all would);
    `kept_for_review` the released sends that kept their message (review before send)."""
    counts = StepCounts(
        campaign_id=campaign_id, step=step, claimed=len(sends) + unchanged, unchanged=unchanged
    )
    for send, outcome in zip(sends, outcomes, strict=True):
        counts.llm_calls += outcome.llm_calls
        if outcome.kind is OutcomeKind.held or outcome.draft is None:
            counts.held += 1
        elif send.sendId in kept_for_review:
            counts.kept_for_review += 1
        elif written is not None and send.sendId not in written:
            counts.changed += 1
        else:
            counts.regenerated += 1
            counts.cache_hits += outcome.cache_hit
            counts.fell_back += outcome.kind is OutcomeKind.fallback
    return counts


def summary_markdown(counts: StepCounts, *, dry_run: bool) -> str:
    """The backfill's markdown summary: one sentence, then the table line."""
    mode = "dry run: nothing was written" if dry_run else "written"
    verb = "would regenerate" if dry_run else "regenerated"
    lines = [
        f"# process-campaign-sends: regenerate step {counts.step} ({mode})",
        f"Campaign **{counts.campaign_id}**, step {counts.step}: {verb} {counts.regenerated} "
        f"({counts.cache_hits} from cache, {counts.llm_calls} LLM calls, {counts.fell_back} "
        f"fell back to the template); {counts.unchanged} unchanged (already written from the "
        f"current instructions); {counts.held} held (kept their previous message); "
        f"{counts.kept_for_review} kept their released message (the new one would need review); "
        "skipped "
        f"{counts.skipped}: {counts.not_scheduled} already sending, sent or closed, "
        f"{counts.busy} claimed by another run, {counts.changed} changed while regenerating.",
        "",
        "| campaign | step | " + " | ".join(COLUMNS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |",
        f"| {counts.campaign_id} | {counts.step} | "
        + " | ".join(str(getattr(counts, name)) for name in COLUMNS)
        + " |",
    ]
    if counts.busy:
        lines += [
            "",
            f"{counts.busy} sends were claimed by another run; run the backfill again once it "
            "has finished (messages already regenerated are recognised and left unchanged).",
        ]
    return "\n".join(lines)
