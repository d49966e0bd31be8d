"""The HTML report in a real headless Chromium: the flow writes it beside its file, and every
chart renders from the file alone (no request leaves the page) with the expected series."""

from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage

from core.analytics.campaign_report import compute_campaign_report
from core.analytics.charts import report_html
from core.analytics.report_frames import report_frames
from tests.flows.test_campaign_report import deliverability_report
from tests.support.browser import chromium
from tests.unit.test_campaign_report import WINDOW
from tests.unit.test_report_charts import VARIANTS_FRAME, with_days_and_mailboxes

pytestmark = pytest.mark.flows

# Every chart's div id, trace names and values, once Plotly has drawn it.
RENDERED = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(div => ({
    id: div.id,
    drawn: div.querySelectorAll('svg.main-svg g.trace').length,
    traces: div.data.map(t => ({
        name: t.name, x: Array.from(t.x), y: Array.from(t.y),
        upper: t.error_y ? Array.from(t.error_y.array) : null,
    })),
}))"""


def open_report(browser: Browser, path: Path, charts: int) -> list[dict]:
    """The rendered charts of the page at path; fails on a console error or any request that
    is not the file itself."""
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot').length === {charts}", timeout=20_000
    )
    rendered = page.evaluate(RENDERED)
    page.close()
    assert errors == []
    assert requests == [path.as_uri()]
    return rendered


def by_id(rendered: list[dict]) -> dict[str, dict[str, dict]]:
    return {chart["id"]: {t["name"]: t for t in chart["traces"]} for chart in rendered}


@pytest.mark.slow  # a flow run, then a browser: about 8 s
def test_the_flows_html_report_renders_every_chart_offline(run_settings, sessions, tmp_path):
    artifacts, _ = deliverability_report(sessions, tmp_path / "deliverability.csv")
    page = tmp_path / "deliverability.html"
    summary = artifacts["campaign-report-summary"].data
    assert f"Charts: [deliverability.html]({page.as_uri()})" in summary
    assert (
        "sent **5** · reply rate **20.0%** · positive reply rate **0.0%** · bounce rate **40.0%**"
        in summary
    )

    with chromium() as browser:
        rendered = open_report(browser, page, charts=3)
    assert [chart["id"] for chart in rendered] == ["funnel", "daily", "mailboxes"]
    assert all(chart["drawn"] >= len(chart["traces"]) > 0 for chart in rendered)
    charts = by_id(rendered)
    funnel = charts["funnel"]["Deliverability · step 1"]
    assert funnel["y"] == ["sent", "opened", "clicked", "replied", "positive replies"]
    assert funnel["x"] == [5, 2, 0, 1, 0]
    assert charts["daily"]["sent"]["x"] == ["2026-02-01", "2026-02-02", "2026-02-03"]
    assert charts["daily"]["sent"]["y"] == [3, 2, 0]
    assert charts["daily"]["replies"]["y"] == [1, 0, 0]
    bounces = charts["mailboxes"]
    assert bounces["hard bounce rate"]["x"] == ["alex@seller.example", "bob@seller.example"]
    assert bounces["hard bounce rate"]["y"] == pytest.approx([1 / 3, 0.0])
    assert bounces["soft bounce rate"]["y"] == pytest.approx([1 / 3, 0.0])


def test_the_variant_chart_renders_rates_with_their_intervals(tmp_path):
    report = compute_campaign_report(with_days_and_mailboxes(), WINDOW)
    page = tmp_path / "variants.html"
    page.write_text(report_html(report_frames(report, VARIANTS_FRAME)), "utf-8")

    with chromium() as browser:
        rendered = open_report(browser, page, charts=4)
    assert [chart["id"] for chart in rendered] == ["funnel", "daily", "variants", "mailboxes"]
    variants = by_id(rendered)["variants"]
    assert list(variants) == ["Alpha · step 1", "Beta · step 1"]
    assert variants["Alpha · step 1"]["x"] == ["A", "B"]
    assert variants["Alpha · step 1"]["y"] == pytest.approx([0.0, 2 / 3])
    assert variants["Alpha · step 1"]["upper"] == pytest.approx([0.56, 0.94 - 2 / 3])
