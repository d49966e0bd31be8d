"""Prefect tasks of `campaign-report`: read the frames, compute the report, write the files.

The read is a handful of aggregate queries in one read-only snapshot, so it is retried freely;
computing is pure pandas; the file is written beside its final name and renamed into place,
so a reader never sees half a report. Nothing is cached or persisted: a report is of its
moment, and its frames live only as long as the run.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.analytics.campaign_report import (
    CampaignReport,
    ReportInputs,
    ReportWindow,
    charts_output,
    compute_campaign_report,
    mailbox_days_output,
    output_format,
)
from core.analytics.charts import report_html
from core.analytics.report_frames import report_frames
from db.engine import DatabaseConfig
from db.queries.report import read_report_inputs
from tasks.database import database_task, in_transaction


def check_output(output: str) -> Path:
    """The output's absolute path, refused before any work when its suffix is not known."""
    output_format(output)
    return Path(output).expanduser().resolve()


@database_task("read-campaign-report")
async def read_report(database: DatabaseConfig, window: ReportWindow) -> ReportInputs:
    """The report's frames for window, from one read-only snapshot of the database."""
    return await in_transaction(
        database, lambda session: read_report_inputs(session, window), rollback=True
    )


@task(name="compute-campaign-report", cache_policy=NO_CACHE, persist_result=False)
async def compute_report(inputs: ReportInputs, window: ReportWindow) -> CampaignReport:
    """The step and campaign rows, with rates, spend per 1,000 and delivery lag."""
    return compute_campaign_report(inputs, window)


@task(name="write-campaign-report", cache_policy=NO_CACHE, persist_result=False)
async def write_report(report: CampaignReport, output: str) -> tuple[str, str]:
    """Write every row (steps, then each campaign's total) as CSV or parquet, and the rows per
    mailbox and day to a file beside it (`mailbox_days_output`); returns both paths."""
    kind = output_format(output)
    report_path, mailbox_path = check_output(output), check_output(mailbox_days_output(output))

    def work() -> None:
        _write_atomically(
            report_path, lambda temporary: _write_frame(report.frame(), temporary, kind)
        )
        _write_atomically(
            mailbox_path, lambda temporary: _write_frame(report.mailbox_days, temporary, kind)
        )

    await anyio.to_thread.run_sync(work)
    return str(report_path), str(mailbox_path)


@task(name="write-campaign-report-charts", cache_policy=NO_CACHE, persist_result=False)
async def write_charts(
    report: CampaignReport, output: str, variants: pd.DataFrame | None = None
) -> str:
    """Write the HTML page of charts beside the output file (`charts_output`); returns its
    file:// URI, for the summary's link. variants: per campaign, step and variant (see
    `core/analytics/report_frames.py`); without it the page has no variant chart."""
    check_output(output)
    path = Path(charts_output(output)).expanduser().resolve()
    page = report_html(report_frames(report, variants))

    def write(temporary: str) -> None:
        Path(temporary).write_text(page, "utf-8")

    def work() -> None:
        _write_atomically(path, write)

    await anyio.to_thread.run_sync(work)
    return path.as_uri()


def _write_frame(frame: pd.DataFrame, path: str, kind: str) -> None:
    if kind == "csv":
        # Ten significant digits: no binary noise (0.1 + 0.2) in a file people read.
        frame.to_csv(path, index=False, float_format="%.10g")
    else:
        frame.to_parquet(path, index=False)


def _write_atomically(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
