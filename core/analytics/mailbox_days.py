"""The campaign report's deliverability part: per sending mailbox and per day (UTC), the sends
and what became of them, with rates, grouped with pandas from one row per handed-over send.

Each send counts on the UTC day of its handover (`COALESCE(sentAt, attemptedAt)`), under its
`EmailSend.mailbox` in lower case; the window and the campaign are the report's, so the first
and last days may be partial. Every mailbox that handed anything over in the window gets a row
for every day of it, zeros included, so a quiet day (a pause, a holiday) shows as one.

- `sent`, `failed`: as in the campaign report (accepted by the server or proven by an event;
  handed over and neither).
- `hard_bounces`, `soft_bounces`, `complaints`, `replies`, `unique_opens`: how many of the day's
  `sent` sends have at least one such event that occurred before the window's end. A bounce
  without a kind is hard, as ingestion treats it; a send can have both kinds. Opens are a
  person's only (`EngagementEvent.isMachine` false).
- `*_rate`: that count divided by `sent`; empty when nothing was sent that day.
"""

from datetime import datetime, timedelta

import pandas as pd

# One row per handed-over send, as db/queries/report.py reads them: flags, summed per day.
SEND_FLAGS = {
    "sent": "sent",
    "failed": "failed",
    "hard_bounced": "hard_bounces",
    "soft_bounced": "soft_bounces",
    "complained": "complaints",
    "replied": "replies",
    "opened": "unique_opens",
}
SEND_COLUMNS = ("mailbox", "day", *SEND_FLAGS)
# Numerator -> rate over `sent`.
RATES = {
    "hard_bounces": "hard_bounce_rate",
    "soft_bounces": "soft_bounce_rate",
    "complaints": "complaint_rate",
    "replies": "reply_rate",
    "unique_opens": "open_rate",
}
COLUMNS = ("mailbox", "day", *SEND_FLAGS.values(), *RATES.values())


def window_days(since: datetime, until: datetime) -> list[str]:
    """The UTC days [since, until) touches, as ISO dates (until itself is excluded)."""
    last = (until - timedelta(microseconds=1)).date()
    return [day.strftime("%Y-%m-%d") for day in pd.date_range(since.date(), last, freq="D")]


def compute_mailbox_days(sends: pd.DataFrame, since: datetime, until: datetime) -> pd.DataFrame:
    """One row per (mailbox, UTC day of the window) with its counts and rates, by mailbox."""
    if sends.empty:
        return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in COLUMNS})
    flags = sends.assign(day=pd.to_datetime(sends["day"]).dt.strftime("%Y-%m-%d"))
    counts = flags.groupby(["mailbox", "day"])[list(SEND_FLAGS)].sum().rename(columns=SEND_FLAGS)
    grid = pd.MultiIndex.from_product(
        [sorted(flags["mailbox"].unique()), window_days(since, until)], names=["mailbox", "day"]
    )
    days = counts.reindex(grid, fill_value=0).astype("int64").reset_index()
    sent = days["sent"].where(days["sent"] > 0)
    for count, rate in RATES.items():
        days[rate] = (days[count] / sent).astype("float64")
    return days[list(COLUMNS)]


def _dtype(column: str) -> str:
    if column in ("mailbox", "day"):
        return "object"
    return "float64" if column in RATES.values() else "int64"
