"""The campaign report's A/B part: per campaign step and variant, the window's sends and what
came back, and which rate the step's test compares.

The counts are those of the campaign report (`core/analytics/campaign_report.py`), of the sends
that recorded a variant (`EmailSend.variantKey`), so a step without variants has no rows here:

- `sent`, `replies`, `bounces`, `unsubscribes`: as in the campaign report.
- `positive_replies`: sent sends with a reply classified `interested` or `meeting_request`
  (`ReplyClassification`, `core/replies`).
- `unique_clicks`: sent sends with a human click (`EngagementEvent.isMachine` false): link
  scanners' clicks are left out.
- `reply_rate`, `positive_reply_rate`: over `sent`; empty when nothing was sent.
- `metric`: what the step's test compares, never opens (privacy proxies open every email): the
  campaign's `sendingRules.abTest.metric`, else the positive-reply rate when any of the step's
  replies was classified, else the reply rate.
- `rate`, `ci_low`, `ci_high`: that metric's rate and its Wilson interval at confidence
  1 - `abTest.level`; `p_value`: the variant against the step's best (two-sided), empty for the
  best itself; `verdict`: the step's sentence, on each of its rows ("B beats A on reply rate
  (p = …)" or "no winner yet: about N more sends per variant needed to see a 1-point lift").
  The statistics are `core/analytics/experiments.py`'s, explained in `docs/experiments.md`.

The same tallies, counted over all time, decide `abTest.autoSelect` (`step_auto_selection`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError

from core.analytics.experiments import (
    POSITIVE_REPLY_RATE,
    REPLY_RATE,
    AutoSelection,
    ExperimentVerdict,
    VariantCounts,
    auto_select,
    compare_variants,
)
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
VERDICT = ("metric", "rate", "ci_low", "ci_high", "p_value", "verdict")
COLUMNS = ("campaign_id", "campaign_name", "step", "variant", *COUNTS, *RATES.values(), *VERDICT)
_LABELS = {ABMetric.positive_reply_rate: POSITIVE_REPLY_RATE, ABMetric.reply_rate: REPLY_RATE}


def metric_label(metric: str) -> str:
    """A metric column's value (an ABMetric) as people read it: "reply rate"."""
    return _LABELS[ABMetric(metric)]


@dataclass(frozen=True)
class VariantTally:
    """One variant's sends and what came back, as the report and autoSelect count them."""

    key: str
    sent: int
    replies: int
    positive_replies: int
    classified_replies: int

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "VariantTally":
        """From a row of its counts, the variant's key in `variant`."""
        return cls(
            key=str(row["variant"]),
            sent=int(row["sent"]),
            replies=int(row["replies"]),
            positive_replies=int(row["positive_replies"]),
            classified_replies=int(row["classified_replies"]),
        )

    def counts(self, metric: ABMetric) -> VariantCounts:
        """Sends and successes of `metric`."""
        successes = (
            self.positive_replies if metric is ABMetric.positive_reply_rate else self.replies
        )
        return VariantCounts(self.key, self.sent, successes)


@dataclass(frozen=True)
class StepTest:
    """A step's A/B test as autoSelect sees it: its campaign's rules and every live variant's
    tally over all time."""

    step_id: str
    rules: ABTest
    tallies: tuple[VariantTally, ...]


def ab_test(raw: object) -> ABTest:
    """A campaign's `sendingRules.abTest`; the defaults when it does not validate (the report
    still shows its counts, and generation says what is wrong with the rules)."""
    try:
        return ABTest.model_validate(raw or {})
    except ValidationError:
        return ABTest()


def step_metric(rules: ABTest, tallies: Sequence[VariantTally]) -> ABMetric:
    """What the step's test compares (see the module docstring)."""
    if rules.metric is not None:
        return rules.metric
    classified = any(tally.classified_replies for tally in tallies)
    return ABMetric.positive_reply_rate if classified else ABMetric.reply_rate


def step_verdict(rules: ABTest, tallies: Sequence[VariantTally]) -> ExperimentVerdict:
    """The report's verdict on one step's variants, at the campaign's level."""
    metric = step_metric(rules, tallies)
    counts = [tally.counts(metric) for tally in tallies]
    return compare_variants(counts, metric=_LABELS[metric], level=rules.level)


def step_auto_selection(rules: ABTest, tallies: Sequence[VariantTally]) -> AutoSelection | None:
    """The winner every later lead of the step gets, once `abTest.autoSelect` is on, each
    variant has `minSendsPerVariant` sends and the always-valid test is significant."""
    if not rules.auto_select:
        return None
    metric = step_metric(rules, tallies)
    return auto_select(
        [tally.counts(metric) for tally in tallies],
        level=rules.level,
        min_sends_per_variant=rules.min_sends_per_variant,
        metric=_LABELS[metric],
    )


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
    judged = [_judged(group) for _, group in rows.groupby(["campaign_id", "step_id"], sort=False)]
    rows = pd.concat(judged)
    rows["step"] = rows["step"].astype("int64")
    rows = rows.sort_values(["campaign_name", "campaign_id", "step", "variant"], kind="stable")
    return rows[list(COLUMNS)].reset_index(drop=True)


def _judged(step: pd.DataFrame) -> pd.DataFrame:
    """One step's rows with its verdict's columns."""
    tallies = [VariantTally.of(row) for row in step.to_dict("records")]
    rules = ab_test(step["ab_test"].iloc[0])
    verdict = step_verdict(rules, tallies)
    results = {result.key: result for result in verdict.variants}
    out = step.copy()
    out["metric"] = step_metric(rules, tallies).value
    for column in ("rate", "ci_low", "ci_high", "p_value"):
        values = [getattr(results[key], column) for key in out["variant"]]
        out[column] = pd.Series(values, index=out.index, dtype="float64")
    out["verdict"] = verdict.sentence
    return out


def empty_rows() -> pd.DataFrame:
    """The variant rows of a window in which no step variant sent."""
    return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in COLUMNS})


def _dtype(column: str) -> str:
    if column in COUNTS or column == "step":
        return "int64"
    floats = (*RATES.values(), "rate", "ci_low", "ci_high", "p_value")
    return "float64" if column in floats else "object"
