"""The campaign report for a notebook: `load_report` returns the DataFrames the `campaign-report`
flow charts, read and computed by the same functions, so an analyst can plot their own.

    from db.reporting import load_report
    frames = load_report(since=datetime(2026, 11, 1), until=datetime(2026, 12, 1))
    frames.daily.pivot(index="day", columns="campaign_name", values="sent").plot()

It lives in `db/` because it reads the database (core never connects); it only reads, in one
read-only snapshot, and writes nothing.
"""

from datetime import datetime

import pandas as pd
from pydantic import SecretStr

from core.analytics.campaign_report import ReportWindow, compute_campaign_report
from core.analytics.report_frames import ReportFrames, report_frames
from core.settings import Settings
from db.base import utcnow
from db.engine import DatabaseConfig, sessions_for
from db.queries.report import read_report_inputs


def load_report(
    campaign_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    database_url: str | None = None,
    variants: pd.DataFrame | None = None,
) -> ReportFrames:
    """The report over [since, until) as DataFrames (`core/analytics/report_frames.py`).

    Args:
        campaign_id: Only this campaign; empty reports every campaign with activity.
        since: Window start (included); empty means 30 days before until. Naive is UTC.
        until: Window end (excluded); empty means now.
        database_url: The database to read; empty means the settings' (DATABASE_URL, `.env`,
            or the embedded server).
        variants: Per campaign, step and variant rows to chart beside the report
            (`VARIANT_COLUMNS`); empty without them.
    """
    window = ReportWindow.ending(until or utcnow(), since=since, campaign_id=campaign_id)
    database = (
        DatabaseConfig(url=SecretStr(database_url))
        if database_url
        else DatabaseConfig.from_settings(Settings())
    )
    with sessions_for(database)() as session:
        inputs = read_report_inputs(session, window)
        session.rollback()
    return report_frames(compute_campaign_report(inputs, window), variants)
