"""The campaign report's per-mailbox, per-day rates, grouped from hand-built send rows."""

import math
from datetime import UTC, datetime

import pandas as pd

from core.analytics.campaign_report import (
    ReportInputs,
    ReportWindow,
    compute_campaign_report,
    mailbox_days_output,
)
from core.analytics.mailbox_days import COLUMNS, compute_mailbox_days, window_days

SINCE = datetime(2026, 2, 1, tzinfo=UTC)
UNTIL = datetime(2026, 2, 4, tzinfo=UTC)
FLAGS = ("sent", "failed", "hard_bounced", "soft_bounced", "complained", "replied", "opened")


def send(mailbox: str, day: str, *flags: str) -> dict[str, object]:
    return {"mailbox": mailbox, "day": day} | {flag: flag in flags for flag in FLAGS}


def sends() -> pd.DataFrame:
    """Alex: four sends on the 1st, nothing on the 2nd, one refused send on the 3rd. Bob: two
    on the 2nd, one of which drew a complaint."""
    return pd.DataFrame(
        [
            send("alex@seller.example", "2026-02-01", "sent", "hard_bounced"),
            send("alex@seller.example", "2026-02-01", "sent", "soft_bounced", "opened"),
            send("alex@seller.example", "2026-02-01", "sent", "opened", "replied"),
            send("alex@seller.example", "2026-02-01", "sent"),
            send("alex@seller.example", "2026-02-03", "failed"),
            send("bob@seller.example", "2026-02-02", "sent", "complained", "opened"),
            send("bob@seller.example", "2026-02-02", "sent"),
        ]
    )


def by_day(frame: pd.DataFrame) -> dict[tuple[str, str], dict]:
    return {(r["mailbox"][:3], r["day"]): r for r in frame.to_dict("records")}


def test_each_mailbox_gets_every_day_of_the_window_with_counts_and_rates():
    frame = compute_mailbox_days(sends(), SINCE, UNTIL)
    assert list(frame.columns) == list(COLUMNS)
    days = by_day(frame)
    assert list(days) == [
        (mailbox, f"2026-02-0{day}") for mailbox in ("ale", "bob") for day in (1, 2, 3)
    ]
    first = days[("ale", "2026-02-01")]
    assert {k: first[k] for k in ("sent", "failed", "hard_bounces", "soft_bounces")} == {
        "sent": 4,
        "failed": 0,
        "hard_bounces": 1,
        "soft_bounces": 1,
    }
    assert (first["replies"], first["unique_opens"], first["complaints"]) == (1, 2, 0)
    assert (first["hard_bounce_rate"], first["soft_bounce_rate"]) == (0.25, 0.25)
    assert (first["reply_rate"], first["open_rate"], first["complaint_rate"]) == (0.25, 0.5, 0.0)
    bob = days[("bob", "2026-02-02")]
    assert (bob["sent"], bob["complaints"], bob["complaint_rate"], bob["open_rate"]) == (
        2,
        1,
        0.5,
        0.5,
    )
    # Nothing sent: zeros and no rate, never a division by zero.
    for quiet in (
        days[("ale", "2026-02-02")],
        days[("ale", "2026-02-03")],
        days[("bob", "2026-02-01")],
    ):
        assert quiet["sent"] == 0
        assert all(math.isnan(quiet[rate]) for rate in COLUMNS if rate.endswith("_rate"))
    assert days[("ale", "2026-02-03")]["failed"] == 1


def test_the_window_days_are_utc_dates_until_excluded():
    assert window_days(SINCE, UNTIL) == ["2026-02-01", "2026-02-02", "2026-02-03"]
    assert window_days(SINCE, datetime(2026, 2, 3, 6, tzinfo=UTC))[-1] == "2026-02-03"
    assert window_days(
        datetime(2026, 2, 1, 23, tzinfo=UTC), datetime(2026, 2, 2, 1, tzinfo=UTC)
    ) == [
        "2026-02-01",
        "2026-02-02",
    ]


def test_the_reports_mailbox_table_is_plain_json_and_its_file_sits_beside_the_report():
    inputs = ReportInputs.empty()
    inputs.mailbox_sends = sends()
    report = compute_campaign_report(inputs, ReportWindow(since=SINCE, until=UNTIL))
    rows = report.table("mailbox_day")
    assert len(rows) == 6 and type(rows[0]["sent"]) is int
    assert rows[1]["day"] == "2026-02-02" and rows[1]["open_rate"] is None
    assert mailbox_days_output("out/spring.csv") == "out/spring-mailbox-days.csv"
    assert mailbox_days_output("r.PARQUET") == "r-mailbox-days.PARQUET"


def test_no_sends_give_an_empty_frame_with_the_columns():
    frame = compute_mailbox_days(pd.DataFrame(columns=["mailbox", "day", *FLAGS]), SINCE, UNTIL)
    assert frame.empty and list(frame.columns) == list(COLUMNS)
