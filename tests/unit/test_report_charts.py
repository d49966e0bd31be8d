"""The HTML report's charts on hand-built frames: which charts, which series, which numbers,
and a page that needs nothing from the network. The browser renders it in
tests/flows/test_campaign_report_html.py."""

import re
from datetime import date

import pandas as pd
import pytest

from core.analytics.campaign_report import (
    DAILY_COLUMNS,
    charts_output,
    compute_campaign_report,
    headline,
    summary_markdown,
)
from core.analytics.charts import (
    DAILY,
    FUNNEL,
    MAILBOXES,
    VARIANTS,
    report_figures,
    report_html,
)
from core.analytics.experiments import (
    POSITIVE_REPLY_RATE,
    REPLY_RATE,
    VariantCounts,
    compare_variants,
    wilson_interval,
)
from core.analytics.mailbox_days import SEND_COLUMNS
from core.analytics.report_frames import VARIANT_COLUMNS, report_frames, variant_rows
from tests.unit.test_campaign_report import WINDOW, inputs

# Alpha step 1 has two variants, Beta step 1 one; rates and intervals as experiments.py gives.
VARIANTS_FRAME = pd.DataFrame(
    {
        "campaignId": ["c-a", "c-a", "c-b"],
        "stepOrder": [1, 1, 1],
        "variantKey": ["B", "A", "A"],
        "sends": [3, 3, 4],
        "replies": [2, 0, 1],
        "rate": [2 / 3, 0.0, 0.25],
        "ciLow": [0.2, 0.0, 0.05],
        "ciHigh": [0.94, 0.56, 0.7],
    }
)


def with_days_and_mailboxes():
    """The unit report's inputs, with sends and replies per day and two mailboxes' sends."""
    frames = inputs()
    frames.daily = pd.DataFrame(
        {
            "campaign_id": ["c-a", "c-a", "c-b"],
            "day": [date(2026, 2, 27), date(2026, 2, 28), date(2026, 2, 28)],
            "sent": [6, 0, 4],
            "replies": [1, 1, 1],
        }
    )
    mailbox_rows = [
        ("a@seller.example", "2026-02-27", True, False, True, False, False, False, False),
        ("a@seller.example", "2026-02-27", True, False, False, False, False, True, True),
        ("b@seller.example", "2026-02-28", True, False, False, True, False, False, True),
        ("b@seller.example", "2026-02-28", True, False, False, False, False, False, False),
    ]
    frames.mailbox_sends = pd.DataFrame(mailbox_rows, columns=list(SEND_COLUMNS))
    return frames


def traces(figure):
    return {trace.name: trace for trace in figure.data}


def test_the_daily_frame_has_every_campaign_and_day_zeros_included():
    report = compute_campaign_report(with_days_and_mailboxes(), WINDOW)
    daily = report.daily
    assert list(daily.columns) == list(DAILY_COLUMNS)
    assert len(daily) == 2 * 30  # Alpha and Beta (Gamma had nothing), every day of the window
    assert daily.groupby("campaign_name")[["sent", "replies"]].sum().to_dict("index") == {
        "Alpha": {"sent": 6, "replies": 2},
        "Beta": {"sent": 4, "replies": 1},
    }
    last = daily.loc[daily["day"] == "2026-02-28"].set_index("campaign_id")
    assert last[["sent", "replies"]].to_dict("index") == {
        "c-a": {"sent": 0, "replies": 1},
        "c-b": {"sent": 4, "replies": 1},
    }
    assert daily["day"].min() == "2026-01-30" and daily["day"].max() == "2026-02-28"


def test_the_charts_and_their_series():
    report = compute_campaign_report(with_days_and_mailboxes(), WINDOW)
    figures = report_figures(report_frames(report, VARIANTS_FRAME))
    assert list(figures) == [FUNNEL, DAILY, VARIANTS, MAILBOXES]

    funnel = traces(figures[FUNNEL])
    # Alpha's step 2 sent nothing: no funnel of its own.
    assert list(funnel) == ["Alpha · step 1", "Beta · step 1"]
    stages = ["sent", "opened", "clicked", "replied", "positive replies"]
    assert list(funnel["Alpha · step 1"].y) == stages
    assert list(funnel["Alpha · step 1"].x) == [6, 3, 1, 2, 1]
    assert list(funnel["Beta · step 1"].x) == [4, 4, 2, 1, 0]

    daily = traces(figures[DAILY])
    assert list(daily) == ["sent", "replies"]
    assert len(daily["sent"].x) == 30
    assert sum(daily["sent"].y) == 10 and sum(daily["replies"].y) == 3
    assert daily["sent"].y[-2:] == (6, 4) and daily["replies"].y[-2:] == (1, 2)

    variants = traces(figures[VARIANTS])
    assert list(variants) == ["Alpha · step 1", "Beta · step 1"]
    alpha = variants["Alpha · step 1"]
    assert list(alpha.x) == ["A", "B"] and list(alpha.y) == pytest.approx([0.0, 2 / 3])
    assert list(alpha.error_y.array) == pytest.approx([0.56, 0.94 - 2 / 3])
    assert list(alpha.error_y.arrayminus) == pytest.approx([0.0, 2 / 3 - 0.2])

    mailboxes = traces(figures[MAILBOXES])
    assert list(mailboxes) == ["hard bounce rate", "soft bounce rate"]
    assert list(mailboxes["hard bounce rate"].x) == ["a@seller.example", "b@seller.example"]
    assert list(mailboxes["hard bounce rate"].y) == [0.5, 0.0]
    assert list(mailboxes["soft bounce rate"].y) == [0.0, 0.5]


def test_no_variants_and_no_mailboxes_leave_their_charts_out():
    report = compute_campaign_report(inputs(), WINDOW)
    assert list(report_figures(report_frames(report))) == [FUNNEL, DAILY]


def test_a_variants_frame_without_its_columns_is_refused():
    report = compute_campaign_report(inputs(), WINDOW)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) ciLow, ciHigh"):
        report_frames(report, VARIANTS_FRAME.drop(columns=["ciLow", "ciHigh"]))
    assert list(report_frames(report).variants.columns) == list(VARIANT_COLUMNS)


def test_the_page_is_self_contained_with_the_headline_numbers():
    frames = with_days_and_mailboxes()
    frames.campaigns.loc[0, "campaign_name"] = "<b>Alpha</b></script>"
    report = compute_campaign_report(frames, WINDOW)
    page = report_html(report_frames(report, VARIANTS_FRAME))

    assert page.startswith("<!DOCTYPE html>")
    # Every script is inline: nothing to fetch, so the page works offline.
    assert re.findall(r"<script[^>]*\bsrc=", page) == []
    assert re.findall(r"<link[^>]*\bhref=", page) == []
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js is inlined
    for div_id in (FUNNEL, DAILY, VARIANTS, MAILBOXES):
        assert f'id="{div_id}"' in page
    # A campaign name is a label, never markup, and never ends the script early.
    assert "<b>Alpha</b>" not in page and '</script>"' not in page
    assert page.count("</script>") == page.count("<script")
    # sent 10, replied 3 of them (one positively), bounced 1, unsubscribed 1.
    assert "sent: <strong>10</strong>" in page
    assert "reply rate: <strong>30.0%</strong>" in page
    assert "positive reply rate: <strong>10.0%</strong>" in page
    assert "bounce rate: <strong>10.0%</strong>" in page
    assert "unsubscribe rate: <strong>10.0%</strong>" in page


def test_the_summary_links_the_charts_and_leads_with_the_headline():
    report = compute_campaign_report(inputs(), WINDOW)
    assert headline(report.totals()) == [
        ("sent", "10"),
        ("reply rate", "30.0%"),
        ("positive reply rate", "10.0%"),
        ("bounce rate", "10.0%"),
        ("unsubscribe rate", "10.0%"),
    ]
    linked = summary_markdown(report, "file:///srv/reports/nov.html")
    assert "sent **10** · reply rate **30.0%** · positive reply rate **10.0%**" in linked
    assert "Charts: [nov.html](file:///srv/reports/nov.html)" in linked
    assert "Charts: none written" in summary_markdown(report)


@pytest.mark.parametrize(
    ("path", "page"),
    [("out/nov.csv", "out/nov.html"), ("/srv/r/nov.PARQUET", "/srv/r/nov.html")],
)
def test_the_charts_go_beside_the_output(path, page):
    assert charts_output(path) == page


def test_an_experiments_verdict_becomes_the_charts_rows():
    counts = [VariantCounts("A", 200, 10), VariantCounts("B", 200, 30), VariantCounts("C", 0, 0)]
    verdict = compare_variants(counts, metric=REPLY_RATE)
    rows = variant_rows("c-a", 1, verdict)
    assert list(rows.columns) == list(VARIANT_COLUMNS)
    assert rows[["variantKey", "sends", "replies"]].to_numpy().tolist() == [
        ["A", 200, 10],
        ["B", 200, 30],
        ["C", 0, 0],
    ]
    assert rows["rate"].tolist()[:2] == [0.05, 0.15] and pd.isna(rows["rate"].iloc[2])
    assert (rows.loc[1, "ciLow"], rows.loc[1, "ciHigh"]) == wilson_interval(30, 200, level=0.05)

    report = compute_campaign_report(inputs(), WINDOW)
    chart = traces(report_figures(report_frames(report, rows))[VARIANTS])["Alpha · step 1"]
    assert list(chart.x) == ["A", "B", "C"] and list(chart.y)[:2] == [0.05, 0.15]

    positive = compare_variants(counts, metric=POSITIVE_REPLY_RATE)
    with pytest.raises(ValueError, match="shows the reply rate, not the positive-reply rate"):
        variant_rows("c-a", 1, positive)
