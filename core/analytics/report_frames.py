"""The campaign report as named DataFrames: what the HTML report charts and what
`db.reporting.load_report` hands an analyst, built from one `CampaignReport` so both see the same
numbers.

- `steps`, `campaigns`, `mailbox_days`: the report's rows (`core/analytics/campaign_report.py`
  and `core/analytics/mailbox_days.py` say what every column means).
- `daily`: per campaign and UTC day of the window, the emails sent that day and the first
  replies that came that day (`DAILY_COLUMNS`).
- `variants`: per campaign, step and A/B variant, sends, replies and the reply rate with its
  confidence interval (`VARIANT_COLUMNS`, `variant_rows` from an experiments verdict); empty
  until the report reads variants.
- `totals`: every campaign together (`CampaignReport.totals`).
"""

from dataclasses import dataclass, field

import pandas as pd

from core.analytics.campaign_report import CampaignReport, ReportWindow
from core.analytics.experiments import REPLY_RATE, ExperimentVerdict

# Per campaign, step and variant: the variant's reply rate and its confidence interval (0 to 1).
VARIANT_COLUMNS = (
    "campaignId",
    "stepOrder",
    "variantKey",
    "sends",
    "replies",
    "rate",
    "ciLow",
    "ciHigh",
)


def variant_rows(campaign_id: str, step_order: int, verdict: ExperimentVerdict) -> pd.DataFrame:
    """One step's variants as VARIANT_COLUMNS rows, from `compare_variants`' verdict on the
    reply rate (its Wilson interval as ciLow, ciHigh); a variant with no sends has no rate."""
    if verdict.metric != REPLY_RATE:
        raise ValueError(f"the variants chart shows the {REPLY_RATE}, not the {verdict.metric}")
    rows = [
        (campaign_id, step_order, v.key, v.sends, v.successes, v.rate, v.ci_low, v.ci_high)
        for v in verdict.variants
    ]
    frame = pd.DataFrame(rows, columns=list(VARIANT_COLUMNS))
    return frame.astype({name: _variant_dtype(name) for name in VARIANT_COLUMNS})


def empty_variants() -> pd.DataFrame:
    """A variants frame with no rows and the expected columns."""
    return pd.DataFrame({name: pd.Series(dtype=_variant_dtype(name)) for name in VARIANT_COLUMNS})


@dataclass
class ReportFrames:
    """A computed report as DataFrames, plus its window and its totals."""

    window: ReportWindow
    steps: pd.DataFrame
    campaigns: pd.DataFrame
    daily: pd.DataFrame
    mailbox_days: pd.DataFrame
    totals: dict[str, float | int | None]
    variants: pd.DataFrame = field(default_factory=empty_variants)


def report_frames(report: CampaignReport, variants: pd.DataFrame | None = None) -> ReportFrames:
    """The report's frames; variants, when given, must have VARIANT_COLUMNS."""
    if variants is None:
        variants = empty_variants()
    missing = [name for name in VARIANT_COLUMNS if name not in variants.columns]
    if missing:
        raise ValueError(f"the variants frame lacks the column(s) {', '.join(missing)}")
    return ReportFrames(
        window=report.window,
        steps=report.steps,
        campaigns=report.campaigns,
        daily=report.daily,
        mailbox_days=report.mailbox_days,
        totals=report.totals(),
        variants=variants[list(VARIANT_COLUMNS)],
    )


def _variant_dtype(column: str) -> str:
    if column in ("campaignId", "variantKey"):
        return "object"
    return "int64" if column in ("stepOrder", "sends", "replies") else "float64"
