"""The report's A/B verdict per step, and autoSelect's pick, from per-variant tallies."""

import pandas as pd

from core.analytics.variant_report import (
    COLUMNS,
    VariantTally,
    compute_variant_rows,
    step_auto_selection,
)
from core.campaigns.sending_rules import ABTest

STEPS = pd.DataFrame([{"campaign_id": "c1", "campaign_name": "Spring", "step_id": "s1", "step": 1}])


def sends(*variants, ab_test=None):
    return pd.DataFrame(
        [
            {
                "campaign_id": "c1",
                "step_id": "s1",
                "variant": key,
                "ab_test": ab_test,
                "sent": sent,
                "replies": replies,
                "positive_replies": positive,
                "unsubscribes": 0,
                "bounces": 0,
                "unique_clicks": 0,
                "classified_replies": positive,
            }
            for key, sent, replies, positive in variants
        ]
    )


def test_a_real_difference_names_the_winner_with_its_p_value():
    rows = compute_variant_rows(sends(("A", 1000, 20, 0), ("B", 1000, 40, 0)), STEPS)
    assert list(rows.columns) == list(COLUMNS)
    a, b = rows.to_dict("records")
    assert a["metric"] == b["metric"] == "reply_rate"
    assert a["verdict"] == b["verdict"]
    assert a["verdict"].startswith("B beats A on reply rate (p = ")
    assert a["p_value"] < 0.05 and pd.isna(b["p_value"])  # B is the best: no p against itself
    assert (a["rate"], b["rate"]) == (0.02, 0.04)
    assert a["ci_low"] < 0.02 < a["ci_high"]


def test_no_winner_yet_says_how_many_more_sends_are_needed():
    rows = compute_variant_rows(sends(("A", 100, 5, 1), ("B", 100, 6, 2)), STEPS)
    verdict = rows["verdict"].iloc[0]
    assert verdict.startswith("no winner yet: about ")
    assert verdict.endswith("more sends per variant needed to see a 1-point lift")
    # A reply was classified: the positive-reply rate is compared, never opens.
    assert set(rows["metric"]) == {"positive_reply_rate"}


def test_the_campaigns_level_and_metric_are_used():
    strict = {"level": 0.0001, "metric": "reply_rate"}
    rows = compute_variant_rows(
        sends(("A", 1000, 20, 0), ("B", 1000, 35, 0), ab_test=strict), STEPS
    )
    assert rows["verdict"].iloc[0].startswith("no winner")
    assert set(rows["metric"]) == {"reply_rate"}


def tallies(a_replies: int, b_replies: int, sent: int = 3000) -> list[VariantTally]:
    return [
        VariantTally("A", sent, a_replies, 0, 0),
        VariantTally("B", sent, b_replies, 0, 0),
    ]


def test_auto_select_is_off_by_default_and_waits_for_the_minimum_sends():
    assert step_auto_selection(ABTest(), tallies(60, 240)) is None
    on = ABTest(auto_select=True, min_sends_per_variant=5000)
    assert step_auto_selection(on, tallies(60, 240)) is None


def test_auto_select_picks_a_clear_winner_with_its_figures_and_not_a_tie():
    on = ABTest(auto_select=True, min_sends_per_variant=1000)
    pick = step_auto_selection(on, tallies(60, 240))
    assert pick is not None and pick.winner == "B"
    figures = pick.figures()
    assert figures["winner"] == "B" and figures["metric"] == "reply rate"
    assert [v["sends"] for v in figures["variants"]] == [3000, 3000]
    assert step_auto_selection(on, tallies(150, 152)) is None
