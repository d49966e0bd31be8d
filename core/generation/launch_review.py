"""The launch review of a campaign: sample drafts shown to a person, and what their answer did.

Markdown for the `review-campaign-sample` flow's artifacts. Leads are named by their enrolment
id, never by address; the drafts are shown in full, as the dry-run previews show them.
"""

from core.generation.due_lead import DueLead
from core.generation.generate import LeadOutcome, OutcomeKind
from core.statuses import CampaignStatus

# What an approved launch may make active: a campaign not started yet, or one paused.
LAUNCHABLE = frozenset({CampaignStatus.draft, CampaignStatus.paused})


def _quoted(text: str) -> str:
    """Text as a markdown blockquote, every line of it (blank ones included)."""
    return "\n".join(f"> {line}".rstrip() for line in text.splitlines() or [""])


def sample_markdown(
    campaign_id: str, step_order: int, leads: list[DueLead], outcomes: list[LeadOutcome]
) -> str:
    """The sample drafts, one section per lead, with what generation made of each."""
    counts = {kind: sum(o.kind is kind for o in outcomes) for kind in OutcomeKind}
    lines = [
        f"# Launch review: campaign `{campaign_id}`, step {step_order}",
        "",
        f"{len(outcomes)} sample drafts (a dry run: nothing was written or sent): "
        f"{counts[OutcomeKind.generated]} written by the LLM, "
        f"{counts[OutcomeKind.fallback]} fell back to the template, "
        f"{counts[OutcomeKind.held]} held.",
        "",
        "Resume this run with **approve** ticked to make the campaign active, or unticked to "
        "leave it as it is; the **note** is kept with the run.",
    ]
    for lead, outcome in zip(leads, outcomes, strict=True):
        lines += ["", f"## Enrolment `{lead.campaignLeadId}`: {outcome.kind.value}"]
        if outcome.reason:
            lines += ["", f"Why: {outcome.reason}"]
        if outcome.draft is not None:
            lines += ["", f"**Subject:** {outcome.draft.subject}", "", _quoted(outcome.draft.body)]
    return "\n".join(lines) + "\n"


def decision_markdown(
    campaign_id: str,
    *,
    approved: bool,
    note: str,
    before: CampaignStatus | None,
    after: CampaignStatus | None,
) -> str:
    """What the reviewer answered and what it did to the campaign."""
    if not approved:
        outcome = f"Rejected: the campaign was left {before}."
    elif after is CampaignStatus.active and before in LAUNCHABLE:
        outcome = f"Approved: the campaign is now active (it was {before})."
    elif before is CampaignStatus.active:
        outcome = "Approved: the campaign was already active."
    else:
        outcome = (
            f"Approved, but the campaign is {before}, which no launch changes: it was left so."
        )
    return (
        "\n".join(
            [
                f"# Launch review of campaign `{campaign_id}`",
                "",
                outcome,
                "",
                "Reviewer's note:",
                "",
                _quoted(note.strip() or "(none)"),
            ]
        )
        + "\n"
    )
