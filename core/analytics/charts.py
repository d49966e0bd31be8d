"""The campaign report's HTML page: Plotly charts of `ReportFrames`, one self-contained file.

plotly.js is inlined once in the page (about 4.8 MB), so the file opens offline and from a mail
attachment; nothing is fetched. Each chart is a `<div>` with a fixed id (`FUNNEL`, `DAILY`,
`VARIANTS`, `MAILBOXES`) and traces named as below, which the browser test reads back:

- funnel: one trace per campaign and step, `"<campaign> · step N"`, over the stages sent,
  opened, clicked, replied, positive replies. Opens and clicks are a person's only, as in the
  report: machine ones (scanners, privacy proxies) are its `machine_*` columns, not charted.
- daily: `sent` and `replies`, every campaign of the report together, per UTC day.
- variants (only when the report has variant rows): one trace per campaign and step, a bar per
  variant with its reply rate and the confidence interval as error bars.
- mailboxes (only when some send had a mailbox): `hard bounce rate` and `soft bounce rate` per
  mailbox over the window.

Pure: DataFrames in, a string out; no database, no Prefect, no file.
"""

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from core.analytics.campaign_report import headline
from core.analytics.report_frames import ReportFrames

FUNNEL, DAILY, VARIANTS, MAILBOXES = "funnel", "daily", "variants", "mailboxes"
# Stage label -> the steps frame's count column.
FUNNEL_STAGES = {
    "sent": "sent",
    "opened": "unique_opens",
    "clicked": "unique_clicks",
    "replied": "replies",
    "positive replies": "positive_replies",
}


def _label(text: object) -> str:
    # Plotly reads a subset of HTML in labels; a campaign name is shown as typed, never as markup.
    return html.escape(str(text), quote=False)


def _step_name(campaign: object, step: object) -> str:
    return f"{_label(campaign)} · step {step}"


def funnel_figure(steps: pd.DataFrame) -> go.Figure:
    """The funnel of every campaign step with anything sent."""
    figure = go.Figure()
    for values in steps.loc[steps["sent"] > 0].to_dict("records"):
        figure.add_trace(
            go.Funnel(
                name=_step_name(values["campaign_name"], values["step"]),
                y=list(FUNNEL_STAGES),
                x=[int(values[column]) for column in FUNNEL_STAGES.values()],
                textinfo="value+percent initial",
            )
        )
    figure.update_layout(title="Funnel per campaign and step (of the emails sent in the window)")
    return figure


def daily_figure(daily: pd.DataFrame) -> go.Figure:
    """Emails sent and first replies per UTC day, every campaign together."""
    per_day = daily.groupby("day", sort=True)[["sent", "replies"]].sum()
    figure = go.Figure(
        [
            go.Bar(name="sent", x=list(per_day.index), y=per_day["sent"].tolist()),
            go.Scatter(
                name="replies",
                x=list(per_day.index),
                y=per_day["replies"].tolist(),
                mode="lines+markers",
            ),
        ]
    )
    figure.update_layout(
        title="Sent per day (handover) and replies per day (first reply), UTC",
        xaxis={"type": "category"},
    )
    return figure


def variants_figure(variants: pd.DataFrame, campaign_names: dict[str, str]) -> go.Figure:
    """Each variant's reply rate with its confidence interval, one trace per campaign step."""
    figure = go.Figure()
    ordered = variants.sort_values(["campaignId", "stepOrder", "variantKey"], kind="stable")
    for (campaign_id, step), rows in ordered.groupby(["campaignId", "stepOrder"], sort=False):
        name = campaign_names.get(str(campaign_id), str(campaign_id))
        figure.add_trace(
            go.Bar(
                name=_step_name(name, step),
                x=[_label(key) for key in rows["variantKey"]],
                y=rows["rate"].tolist(),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (rows["ciHigh"] - rows["rate"]).tolist(),
                    "arrayminus": (rows["rate"] - rows["ciLow"]).tolist(),
                },
                customdata=rows[["sends", "replies"]].to_numpy().tolist(),
                hovertemplate="%{x}: %{y:.1%} (%{customdata[1]} of %{customdata[0]})",
            )
        )
    figure.update_layout(
        title="Reply rate per variant, with its confidence interval",
        yaxis={"tickformat": ".0%"},
        barmode="group",
    )
    return figure


def mailbox_figure(mailbox_days: pd.DataFrame) -> go.Figure:
    """Hard and soft bounce rates per sending mailbox over the window."""
    counts = ["sent", "hard_bounces", "soft_bounces"]
    per_mailbox = mailbox_days.groupby("mailbox", sort=True)[counts].sum()
    sent = per_mailbox["sent"].where(per_mailbox["sent"] > 0)
    mailboxes = [_label(mailbox) for mailbox in per_mailbox.index]
    figure = go.Figure(
        [
            go.Bar(
                name=f"{kind} bounce rate",
                x=mailboxes,
                y=(per_mailbox[f"{kind}_bounces"] / sent).tolist(),
            )
            for kind in ("hard", "soft")
        ]
    )
    figure.update_layout(
        title="Bounce rate per sending mailbox (of its emails sent in the window)",
        yaxis={"tickformat": ".1%"},
        barmode="group",
    )
    return figure


def report_figures(frames: ReportFrames) -> dict[str, go.Figure]:
    """The report's charts by div id, in page order; a chart without data is left out."""
    figures = {FUNNEL: funnel_figure(frames.steps), DAILY: daily_figure(frames.daily)}
    if not frames.variants.empty:
        names = dict(
            zip(frames.campaigns["campaign_id"], frames.campaigns["campaign_name"], strict=True)
        )
        figures[VARIANTS] = variants_figure(frames.variants, names)
    if not frames.mailbox_days.empty:
        figures[MAILBOXES] = mailbox_figure(frames.mailbox_days)
    return figures


def report_html(frames: ReportFrames) -> str:
    """The whole page: the window, the headline numbers, then every chart."""
    window = frames.window
    scope = f"campaign {window.campaign_id}" if window.campaign_id else "all campaigns"
    numbers = "".join(
        f"<li>{html.escape(label)}: <strong>{html.escape(value)}</strong></li>"
        for label, value in headline(frames.totals)
    )
    charts = "\n".join(
        figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)
        for div_id, figure in report_figures(frames).items()
    )
    title = "campaign-report"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>{title}</h1>
<p>From {html.escape(window.since.isoformat())} to {html.escape(window.until.isoformat())}
(until excluded), {html.escape(scope)}: {len(frames.campaigns)} campaign(s).</p>
<ul>{numbers}</ul>
{charts}
</body>
</html>
"""
