"""Prefect tasks of `campaign-report`: read the frames, compute the report, write the file.

The read is a handful of aggregate queries in one read-only snapshot, so it is retried freely;
computing is pure pandas; the file is written beside its final name and renamed into place,
so a reader never sees half a report. Nothing is cached or persisted: a report is of its
moment, and its frames live only as long as the run.
"""

import os
import tempfile
from pathlib import Path

import anyio
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from core.analytics.campaign_report import (
    CampaignReport,
    ReportInputs,
    ReportWindow,
    compute_campaign_report,
    mailbox_days_output,
    output_format,
    variants_output,
)
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
async def write_report(report: CampaignReport, output: str) -> tuple[str, str, str]:
    """Write every row (steps, then each campaign's total) as CSV or parquet, and beside it the
    rows per mailbox and day (`mailbox_days_output`) and per step variant (`variants_output`);
    returns the three paths."""
    kind = output_format(output)
    report_path, mailbox_path = check_output(output), check_output(mailbox_days_output(output))
    variants_path = check_output(variants_output(output))

    def work() -> None:
        _write_atomically(report.frame(), report_path, kind)
        _write_atomically(report.mailbox_days, mailbox_path, kind)
        _write_atomically(report.variants, variants_path, kind)

    await anyio.to_thread.run_sync(work)
    return str(report_path), str(mailbox_path), str(variants_path)


def _write_atomically(frame: pd.DataFrame, path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if kind == "csv":
            # Ten significant digits: no binary noise (0.1 + 0.2) in a file people read.
            frame.to_csv(temporary, index=False, float_format="%.10g")
        else:
            frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
