"""The campaign report's arithmetic on hand-built frames: counts, totals, rates, spend, lag."""

import math
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from pydantic import ValidationError

from core.analytics.campaign_report import (
    COLUMNS,
    ReportInputs,
    ReportOutputError,
    ReportWindow,
    compute_campaign_report,
    output_format,
    summary_markdown,
)
from core.analytics.mailbox_days import COLUMNS as MAILBOX_DAY_COLUMNS
from core.analytics.mailbox_days import SEND_COLUMNS

UNTIL = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW = ReportWindow.ending(UNTIL)
NAN = float("nan")


def inputs() -> ReportInputs:
    """Alpha (two steps), Beta (one step, the template generator) and Gamma (nothing)."""
    return ReportInputs(
        campaigns=pd.DataFrame(
            {"campaign_id": ["c-a", "c-b", "c-c"], "campaign_name": ["Alpha", "Beta", "Gamma"]}
        ),
        steps=pd.DataFrame(
            {
                "campaign_id": ["c-a", "c-a", "c-b", "c-c"],
                "step_id": ["a2", "a1", "b1", "c1"],
                "step": [2, 1, 1, 1],
            }
        ),
        enrolments=pd.DataFrame({"campaign_id": ["c-a", "c-b"], "enrolled": [10, 4]}),
        generation=pd.DataFrame(
            {
                "campaign_id": ["c-a", "c-a", "c-b"],
                "step_id": ["a1", "a2", "b1"],
                "generated": [8, 2, 4],
                "prompt_tokens": [8000, 2400, 0],
                "completion_tokens": [1600, 500, 0],
                "cost_usd": [0.02, 0.006, 0.0],
            }
        ),
        sends=pd.DataFrame(
            {
                "campaign_id": ["c-a", "c-a", "c-b"],
                "step_id": ["a1", "a2", "b1"],
                "scheduled": [8, 2, 4],
                "sent": [6, 0, 4],
                "failed": [1, 0, 0],
                "unique_opens": [3, 0, 4],
                "unique_clicks": [1, 0, 2],
                "machine_opens": [2, 0, 0],
                "machine_clicks": [1, 0, 1],
                "replies": [2, 0, 1],
                "positive_replies": [1, 0, 0],
                "bounces": [1, 0, 0],
                "unsubscribes": [0, 0, 1],
                "complaints": [0, 0, 1],
            }
        ),
        latency=pd.DataFrame(
            {
                "campaign_id": ["c-a", "c-a", "c-b", "c-b", None],
                "step_id": ["a1", None, "b1", None, None],
                "due_to_sent_p50_s": [60.0, 60.0, 30.0, 30.0, 45.0],
                "due_to_sent_p95_s": [600.0, 600.0, 30.0, 30.0, 500.0],
            }
        ),
        review=pd.DataFrame(
            {
                "campaign_id": ["c-a", "c-a"],
                "step_id": ["a1", "a2"],
                "pending_review": [2, 1],
                "oldest_pending_review_s": [3600.0, 7200.0],
            }
        ),
        mailbox_sends=pd.DataFrame(columns=list(SEND_COLUMNS)),  # tests/unit/test_mailbox_days.py
    )


def rows(frame: pd.DataFrame) -> dict[tuple[str, object], dict[Hashable, object]]:
    return {
        (r["campaign_id"], None if pd.isna(r["step"]) else r["step"]): r
        for r in frame.to_dict("records")
    }


def test_step_rows_carry_counts_rates_and_spend_per_1000_generated():
    report = compute_campaign_report(inputs(), WINDOW)
    steps = rows(report.steps)
    assert list(steps) == [("c-a", 1), ("c-a", 2), ("c-b", 1)]  # Gamma had nothing: left out
    a1 = steps[("c-a", 1)]
    assert a1["level"] == "step" and a1["campaign_name"] == "Alpha"
    assert pd.isna(a1["enrolled"])  # an enrolment belongs to the campaign, not a step
    assert [a1[c] for c in ("generated", "scheduled", "sent", "failed")] == [8, 8, 6, 1]
    assert a1["unique_opens"] == 3 and a1["open_rate"] == 0.5
    # Machines' opens and clicks are beside the rates, never in them.
    assert (a1["machine_opens"], a1["machine_clicks"]) == (2, 1)
    assert a1["click_rate"] == pytest.approx(1 / 6)
    assert a1["reply_rate"] == pytest.approx(2 / 6)
    assert a1["bounce_rate"] == pytest.approx(1 / 6)
    assert a1["unsubscribe_rate"] == 0 and a1["complaint_rate"] == 0
    assert a1["prompt_tokens_per_1000"] == 1_000_000
    assert a1["completion_tokens_per_1000"] == 200_000
    assert a1["cost_usd_per_1000"] == pytest.approx(2.5)
    assert (a1["due_to_sent_p50_s"], a1["due_to_sent_p95_s"]) == (60.0, 600.0)

    a2 = steps[("c-a", 2)]
    assert (a2["generated"], a2["scheduled"], a2["sent"]) == (2, 2, 0)
    assert all(math.isnan(a2[rate]) for rate in ("open_rate", "click_rate", "reply_rate"))
    assert a2["cost_usd_per_1000"] == pytest.approx(3.0)
    assert math.isnan(a2["due_to_sent_p50_s"])  # nothing sent at this step

    b1 = steps[("c-b", 1)]
    assert (b1["open_rate"], b1["click_rate"], b1["reply_rate"]) == (1.0, 0.5, 0.25)
    assert (b1["unsubscribe_rate"], b1["complaint_rate"]) == (0.25, 0.25)
    assert b1["cost_usd_per_1000"] == 0 and b1["prompt_tokens_per_1000"] == 0


def test_campaign_rows_sum_their_steps_and_take_the_campaign_lag():
    report = compute_campaign_report(inputs(), WINDOW)
    campaigns = rows(report.campaigns)
    assert list(campaigns) == [("c-a", None), ("c-b", None)]
    a = campaigns[("c-a", None)]
    assert a["level"] == "campaign"
    expected = {
        "enrolled": 10,
        "generated": 10,
        "scheduled": 10,
        "sent": 6,
        "failed": 1,
        "unique_opens": 3,
        "unique_clicks": 1,
        "machine_opens": 2,
        "machine_clicks": 1,
        "replies": 2,
        "bounces": 1,
        "unsubscribes": 0,
        "complaints": 0,
        "prompt_tokens": 10_400,
        "completion_tokens": 2_100,
    }
    assert {k: a[k] for k in expected} == expected
    assert a["cost_usd"] == pytest.approx(0.026)
    assert a["cost_usd_per_1000"] == pytest.approx(2.6)
    assert a["prompt_tokens_per_1000"] == 1_040_000
    assert a["completion_tokens_per_1000"] == 210_000
    assert a["open_rate"] == 0.5 and a["reply_rate"] == pytest.approx(1 / 3)
    assert (a["due_to_sent_p50_s"], a["due_to_sent_p95_s"]) == (60.0, 600.0)
    assert campaigns[("c-b", None)]["enrolled"] == 4


def test_totals_add_campaigns_up_and_take_the_whole_reports_lag():
    total = compute_campaign_report(inputs(), WINDOW).totals()
    funnel = [total[name] for name in ("enrolled", "generated", "sent", "failed")]
    assert funnel == [14, 14, 10, 1]
    assert total["open_rate"] == 0.7 and total["click_rate"] == pytest.approx(0.3)
    assert total["cost_usd"] == pytest.approx(0.026)
    assert total["cost_usd_per_1000"] == pytest.approx(26 / 14)
    assert (total["due_to_sent_p50_s"], total["due_to_sent_p95_s"]) == (45.0, 500.0)


def test_the_file_frame_lists_each_campaigns_steps_then_its_total():
    frame = compute_campaign_report(inputs(), WINDOW).frame()
    assert list(frame.columns) == list(COLUMNS)
    assert list(zip(frame["campaign_id"], frame["level"], strict=True)) == [
        ("c-a", "step"),
        ("c-a", "step"),
        ("c-a", "campaign"),
        ("c-b", "step"),
        ("c-b", "campaign"),
    ]
    assert frame["step"].tolist()[:3] == [1, 2, pd.NA]


def test_table_rows_are_plain_json_values():
    report = compute_campaign_report(inputs(), WINDOW)
    a2 = report.table("step")[1]
    assert a2["step"] == 2 and type(a2["generated"]) is int
    assert a2["enrolled"] is None and a2["open_rate"] is None
    assert a2["cost_usd_per_1000"] == 3.0
    a1 = report.table("step")[0]
    assert a1["click_rate"] == 0.166667  # rounded to six places for the artifact


def test_one_campaign_asked_for_is_reported_even_with_nothing_in_the_window():
    window = ReportWindow.ending(UNTIL, campaign_id="c-c")
    report = compute_campaign_report(inputs(), window)
    (gamma,) = report.campaigns.to_dict("records")
    assert gamma["campaign_name"] == "Gamma"
    assert gamma["enrolled"] == 0 and gamma["sent"] == 0 and gamma["cost_usd"] == 0
    assert math.isnan(gamma["open_rate"]) and math.isnan(gamma["cost_usd_per_1000"])
    assert report.steps["step"].tolist() == [1]


def test_an_unknown_campaign_is_an_error():
    with pytest.raises(ValueError, match="no campaign with id 'nope'"):
        compute_campaign_report(inputs(), ReportWindow.ending(UNTIL, campaign_id="nope"))


def test_an_empty_database_gives_an_empty_report_and_a_summary():
    report = compute_campaign_report(ReportInputs.empty(), WINDOW)
    assert report.steps.empty and report.campaigns.empty and report.mailbox_days.empty
    assert list(report.mailbox_days.columns) == list(MAILBOX_DAY_COLUMNS)
    assert list(report.frame().columns) == list(COLUMNS)
    total = report.totals()
    assert total["sent"] == 0 and total["open_rate"] is None
    assert "Nothing happened in this window." in summary_markdown(report)


def test_the_summary_has_the_window_totals_and_a_line_per_campaign():
    data = inputs()
    data.campaigns.loc[1, "campaign_name"] = "Beta | launch\nweek"
    text = summary_markdown(compute_campaign_report(data, WINDOW))
    assert "From **2026-01-30T00:00:00+00:00** to **2026-03-01T00:00:00+00:00**" in text
    assert "- enrolled 14, generated 14, scheduled 14, sent 10, failed 1" in text
    assert "opened 70.0%, clicked 30.0%, replied 30.0% (positive 10.0%), bounced 10.0%" in text
    assert "per 1,000 emails $1.8571" in text
    assert "p50 45 s, p95 8.3 min" in text
    assert "| Alpha (`c-a`) | 10 | 10 | 6 | 50.0% | 16.7% | 33.3% | 16.7% | 0.0% " in text
    assert "| Beta \\| launch week (`c-b`) | 4 | 4 | 4 | 100.0% |" in text


def test_the_review_queue_per_step_campaign_and_in_total():
    report = compute_campaign_report(inputs(), WINDOW)
    steps, campaigns = rows(report.steps), rows(report.campaigns)
    queue = ("pending_review", "oldest_pending_review_s")
    assert [steps[("c-a", 1)][c] for c in queue] == [2, 3600.0]
    assert [steps[("c-a", 2)][c] for c in queue] == [1, 7200.0]
    assert [campaigns[("c-a", None)][c] for c in queue] == [3, 7200.0]  # summed, longest wait
    beta = campaigns[("c-b", None)]
    assert beta["pending_review"] == 0 and math.isnan(beta["oldest_pending_review_s"])
    total = report.totals()
    assert (total["pending_review"], total["oldest_pending_review_s"]) == (3, 7200.0)
    text = summary_markdown(report)
    assert "- review queue: 3 pending, oldest 2.0 h" in text
    assert "| 10.0 min | 3, oldest 2.0 h |" in text and "| 30 s | 30 s | 0 |" in text


def test_a_campaign_whose_only_news_is_its_review_queue_is_in_the_report():
    data = inputs()
    data.review.loc[2] = ["c-c", "c1", 4, 60.0]
    gamma = rows(compute_campaign_report(data, WINDOW).campaigns)[("c-c", None)]
    assert (gamma["sent"], gamma["pending_review"], gamma["oldest_pending_review_s"]) == (
        0,
        4,
        60.0,
    )


def test_the_window_defaults_to_30_days_and_takes_naive_times_as_utc():
    window = ReportWindow.ending(datetime(2026, 3, 1, 12))
    assert window.until == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert window.until - window.since == timedelta(days=30)
    assert ReportWindow.ending(UNTIL, campaign_id="").campaign_id is None
    with pytest.raises(ValidationError, match="must be before until"):
        ReportWindow.ending(UNTIL, since=UNTIL)


@pytest.mark.parametrize(
    ("path", "kind"), [("out.csv", "csv"), ("a/b/REPORT.CSV", "csv"), ("r.parquet", "parquet")]
)
def test_the_output_format_follows_the_suffix(path, kind):
    assert output_format(path) == kind


@pytest.mark.parametrize("path", ["report.xlsx", "report", "report.csv.gz"])
def test_other_suffixes_are_refused(path):
    with pytest.raises(ReportOutputError, match=r"must end in \.csv or \.parquet"):
        output_format(path)


def test_emails_of_unknown_cost_are_in_neither_side_of_the_spend_per_1000():
    data = inputs()
    # Two of Alpha's step-1 emails were written by a model with no price: their cost is not in
    # cost_usd (SQL sums skip NULL), so they leave the denominator too; their tokens are known.
    data.generation["unpriced"] = [2, 0, 0]
    data.unpriced_models = pd.DataFrame(
        {"campaign_id": ["c-a", "c-zz"], "model": ["gpt-9-turbo", "other"], "unpriced": [2, 5]}
    )
    report = compute_campaign_report(data, WINDOW)
    a1 = next(r for r in report.table("step") if r["step"] == 1 and r["campaign_id"] == "c-a")
    assert a1["unpriced"] == 2
    assert a1["cost_usd_per_1000"] == pytest.approx(0.02 * 1000 / 6)
    assert a1["prompt_tokens_per_1000"] == 1_000_000  # over all 8: tokens are known
    total = report.totals()
    assert (total["generated"], total["unpriced"]) == (14, 2)
    assert total["cost_usd_per_1000"] == pytest.approx(26 / 12)
    # Only the report's campaigns' models are named (c-zz is not in it).
    assert report.unpriced_models.to_dict("records") == [{"model": "gpt-9-turbo", "unpriced": 2}]
    text = summary_markdown(report)
    assert "per 1,000 emails $2.1667" in text
    assert "spend leaves out 2 email(s) of unknown cost" in text
    assert "over the 12 priced one(s) only" in text
    assert "2 email(s) by model `gpt-9-turbo` have no price; add it to OPENAI_PRICES" in text
    # Without any, the summary says nothing about prices.
    assert "no price" not in summary_markdown(compute_campaign_report(inputs(), WINDOW))
