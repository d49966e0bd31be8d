"""The campaign report as named DataFrames: what the HTML report charts and what
`db.reporting.load_report` hands an analyst, built from one `CampaignReport` so both see the same
numbers.

- `steps`, `campaigns`, `mailbox_days`: the report's rows (`core/analytics/campaign_report.py`
  and `core/analytics/mailbox_days.py` say what every column means).
- `daily`: per campaign and UTC day of the window, the emails sent that day and the first
  replies that came that day (`DAILY_COLUMNS`).
- `variants`: per campaign, step and A/B variant, the sends, the successes and rate of the
  step's test metric (the reply or positive-reply rate) and its confidence interval
  (`VARIANT_COLUMNS`), from the report's variant rows (`core/analytics/variant_report.py`);
  empty when no step variant sent.
- `totals`: every campaign together (`CampaignReport.totals`).
"""

from dataclasses import dataclass, field

import pandas as pd

from core.analytics.campaign_report import CampaignReport, ReportWindow
from core.campaigns.sending_rules import ABMetric

# Per campaign, step and variant: the step's metric (an ABMetric value), the variant's successes
# and rate of it, and the rate's confidence interval (0 to 1).
VARIANT_COLUMNS = (
    "campaignId",
    "stepOrder",
    "variantKey",
    "metric",
    "sends",
    "successes",
    "rate",
    "ciLow",
    "ciHigh",
)


def chart_variants(rows: pd.DataFrame) -> pd.DataFrame:
    """The report's variant rows (`variant_report.COLUMNS`) as VARIANT_COLUMNS: the successes
    are the positive replies where the step's test compares the positive-reply rate, else the
    replies."""
    if rows.empty:
        return empty_variants()
    positive = rows["metric"] == ABMetric.positive_reply_rate.value
    frame = pd.DataFrame(
        {
            "campaignId": rows["campaign_id"],
            "stepOrder": rows["step"],
            "variantKey": rows["variant"],
            "metric": rows["metric"],
            "sends": rows["sent"],
            "successes": rows["positive_replies"].where(positive, rows["replies"]),
            "rate": rows["rate"],
            "ciLow": rows["ci_low"],
            "ciHigh": rows["ci_high"],
        }
    )
    return frame.astype({name: _variant_dtype(name) for name in VARIANT_COLUMNS}).reset_index(
        drop=True
    )


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
    """The report's frames; variants, when given, replace the report's own variant rows and
    must have VARIANT_COLUMNS."""
    if variants is None:
        variants = chart_variants(report.variants)
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
    if column in ("campaignId", "variantKey", "metric"):
        return "object"
    return "int64" if column in ("stepOrder", "sends", "successes") else "float64"
