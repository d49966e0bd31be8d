"""The campaign report's A/B part: per campaign step and variant, the window's sends and what
came back, and which rate the step's test compares.

The counts are those of the campaign report (`core/analytics/campaign_report.py`), of the sends
that recorded a variant (`EmailSend.variantKey`), so a step without variants has no rows here:

- `sent`, `replies`, `bounces`, `unsubscribes`: as in the campaign report.
- `positive_replies`: sent sends with a reply classified `interested` or `meeting_request`
  (`ReplyClassification`, `core/replies`).
- `unique_clicks`: sent sends with a click. Every click event counts for now: link scanners'
  machine clicks are not told apart yet.
- `reply_rate`, `positive_reply_rate`: over `sent`; empty when nothing was sent.
- `metric`: what the step's test compares, never opens (privacy proxies open every email): the
  campaign's `sendingRules.abTest.metric`, else the positive-reply rate when any of the step's
  replies was classified, else the reply rate.
"""

import pandas as pd
from pydantic import ValidationError

from core.campaigns.sending_rules import ABMetric, ABTest

COUNTS = (
    "sent",
    "replies",
    "positive_replies",
    "unsubscribes",
    "bounces",
    "unique_clicks",
)
# As db/queries/report.py reads them: one row per (campaign, step, variant) that sent.
SEND_COLUMNS = (
    "campaign_id",
    "step_id",
    "variant",
    "ab_test",
    *COUNTS,
    "classified_replies",
)
# Numerator -> rate over `sent`.
RATES = {"replies": "reply_rate", "positive_replies": "positive_reply_rate"}
COLUMNS = ("campaign_id", "campaign_name", "step", "variant", *COUNTS, *RATES.values(), "metric")


def ab_test(raw: object) -> ABTest:
    """A campaign's `sendingRules.abTest`; the defaults when it does not validate (the report
    still shows its counts, and generation says what is wrong with the rules)."""
    try:
        return ABTest.model_validate(raw or {})
    except ValidationError:
        return ABTest()


def step_metric(raw_ab_test: object, *, classified_replies: int) -> ABMetric:
    """What the step's test compares (see the module docstring)."""
    configured = ab_test(raw_ab_test).metric
    if configured is not None:
        return configured
    return ABMetric.positive_reply_rate if classified_replies > 0 else ABMetric.reply_rate


def compute_variant_rows(sends: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per (campaign, step, variant) that sent in the window, by campaign name, step
    and variant; `steps` holds each step's campaign_name and step (its stepOrder)."""
    if sends.empty:
        return empty_rows()
    rows = sends.merge(steps, on=["campaign_id", "step_id"], how="inner")
    for column in (*COUNTS, "classified_replies"):
        rows[column] = pd.to_numeric(rows[column]).astype("int64")
    sent = rows["sent"].where(rows["sent"] > 0)
    for count, rate in RATES.items():
        rows[rate] = (rows[count] / sent).astype("float64")
    classified = rows.groupby(["campaign_id", "step_id"])["classified_replies"].transform("sum")
    rows["metric"] = [
        step_metric(raw, classified_replies=int(n)).value
        for raw, n in zip(rows["ab_test"], classified, strict=True)
    ]
    rows["step"] = rows["step"].astype("int64")
    rows = rows.sort_values(["campaign_name", "campaign_id", "step", "variant"], kind="stable")
    return rows[list(COLUMNS)].reset_index(drop=True)


def empty_rows() -> pd.DataFrame:
    """The variant rows of a window in which no step variant sent."""
    return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in COLUMNS})


def _dtype(column: str) -> str:
    if column in COUNTS or column == "step":
        return "int64"
    return "float64" if column in RATES.values() else "object"
