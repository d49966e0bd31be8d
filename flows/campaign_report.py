"""The `campaign-report` flow: per campaign and step, the funnel from enrolment to sent, unique
engagement and its rates, LLM spend per 1,000 emails and the lag from due to sent, over a window;
per sending mailbox and UTC day, the deliverability rates; per step A/B variant, what each sent
and got back; with an output file, an HTML page of charts beside it.

What every number means is in `core/analytics/campaign_report.py`; which timestamp puts each
row in the window is in `db/queries/report.py`.
"""

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from core.analytics.campaign_report import CampaignReport, ReportWindow, summary_markdown
from db.engine import DatabaseConfig
from flows.cutoff import run_cutoff
from flows.settings import run_settings
from tasks.report import check_output, compute_report, read_report, write_charts, write_report
from tasks.unwalked import unwalked


@flow(name="campaign-report", log_prints=False)
async def campaign_report(
    campaign_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    output: str | None = None,
) -> CampaignReport:
    """Report each campaign and step over [since, until), as artifacts and optionally a file.

    Args:
        campaign_id: Only this campaign; empty reports every campaign.
        since: Window start (included); empty means 30 days before until.
        until: Window end (excluded); empty means the run's scheduled start.
        output: Also write every row to this .csv or .parquet file on the worker, the rows
            per mailbox and day (`NAME-mailbox-days.csv`) and per step variant
            (`NAME-variants.csv`) beside it, and the charts (`NAME.html`, linked from the
            summary artifact).
    """
    logger = get_run_logger()
    database = DatabaseConfig.from_settings(run_settings())
    window = ReportWindow.ending(run_cutoff(until), since=since, campaign_id=campaign_id)
    if output:
        check_output(output)  # a bad suffix or a missing package fails before any query
    logger.info(
        "campaign report from %s to %s, campaign %s",
        window.since.isoformat(),
        window.until.isoformat(),
        window.campaign_id or "(all)",
    )
    inputs = await read_report(database, window)
    report = await compute_report(unwalked(inputs), window)
    charts = None
    if output:
        report_file, mailbox_file, variants_file = await write_report(unwalked(report), output)
        logger.info("wrote %d rows to %s", len(report.steps) + len(report.campaigns), report_file)
        logger.info("wrote %d rows to %s", len(report.mailbox_days), mailbox_file)
        logger.info("wrote %d rows to %s", len(report.variants), variants_file)
        charts = await write_charts(unwalked(report), output)
        logger.info("wrote the charts to %s", charts)
    await _publish(report, charts)
    total = report.totals()
    logger.info(
        "%d campaigns, %d steps: enrolled %s, generated %s, sent %s, failed %s",
        len(report.campaigns),
        len(report.steps),
        total["enrolled"],
        total["generated"],
        total["sent"],
        total["failed"],
    )
    return report


async def _publish(report: CampaignReport, charts: str | None) -> None:
    span = f"{report.window.since.isoformat()} to {report.window.until.isoformat()}"
    await acreate_table_artifact(
        key="campaign-report-steps",
        table=report.table("step") or [{"campaign_id": "(nothing in this window)"}],
        description=f"Per campaign step, {span}; rates over sent, spend per 1,000 generated",
    )
    await acreate_table_artifact(
        key="campaign-report-campaigns",
        table=report.table("campaign") or [{"campaign_id": "(nothing in this window)"}],
        description=f"Per campaign, {span}; rates over sent, spend per 1,000 generated",
    )
    await acreate_table_artifact(
        key="campaign-report-mailbox-days",
        table=report.table("mailbox_day") or [{"mailbox": "(nothing sent in this window)"}],
        description=f"Per sending mailbox and UTC day, {span}; rates over sent",
    )
    await acreate_table_artifact(
        key="campaign-report-variants",
        table=report.table("variant") or [{"campaign_id": "(no step variant sent)"}],
        description=f"Per campaign step and A/B variant, {span}; rates over sent",
    )
    await acreate_markdown_artifact(
        key="campaign-report-summary",
        markdown=summary_markdown(report, charts),
        description=f"Campaign report, {span}",
    )
