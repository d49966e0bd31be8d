"""The campaign report: a funnel, engagement rates, LLM spend and delivery lag per campaign and
step over a time window, computed from the frames `db/queries/report.py` reads.

Pure pandas: no database, no Prefect. The counts come from SQL already grouped per (campaign,
step); this module joins them onto every step of every campaign in the report, adds the
campaign total rows, and derives the rates. No address, subject or body is ever read.

What each number means, for the window [since, until):

- `enrolled`: enrolments (`CampaignLead`) created in the window. An enrolment belongs to the
  campaign, not to a step, so step rows leave it empty; the campaign row has it.
- `generated`: messages (`GeneratedMessage`) created in the window, `superseded` ones and
  drafts written ahead and not used yet (`pregenerated`) excluded.
- `scheduled`: sends (`EmailSend`) created in the window, whatever their status now (each send
  is created `scheduled`).
- `sent`: sends handed over in the window (`COALESCE(sentAt, attemptedAt)` in it) that left:
  accepted by the mail server (`sentAt` set), or with any engagement event before `until` (a
  bounce refused at handover, or an open or reply of an `unknown` handover, proves it left).
- `failed`: sends handed over in the window that did not count as sent (status `failed` or
  `unknown` and no event): refused, out of retries, or cut short.
- `unique_opens`, `unique_clicks`, `replies`, `bounces` (hard or soft), `unsubscribes`,
  `complaints`: how many of the `sent` sends have at least one event of that type that occurred
  (`occurredAt`) before `until`, however late after the window's start. Each send counts once
  per type, so ten opens of one email are one unique open. `auto_reply` is not a reply. Opens
  and clicks are a person's only (`EngagementEvent.isMachine` false; `core.engagement.machine`
  says which a machine made).
- `positive_replies`: of those, the sent sends with a reply classified `interested` or
  `meeting_request` (`core.replies.intent.POSITIVE_INTENTS`, `ReplyClassification.intent`).
- `machine_opens`, `machine_clicks`: the `sent` sends opened (clicked) by machines only, such
  as Apple Mail Privacy Protection's prefetch or a link scanner, and by no person: beside the
  rates, not in them, so `unique_opens + machine_opens` is every send with any open.
- `*_rate`: that count divided by `sent` (so every rate is between 0 and 1: the denominator is
  the window's sends, and only their events count); empty when nothing was sent. The click rate
  is over sent, not over opens.
- `prompt_tokens`, `completion_tokens`, `cost_usd`: the LLM spend of every message created in
  the window, `superseded` and `pregenerated` ones included (they were paid for); `cost_usd` is
  the estimate the generator stored in `GeneratedMessage.costUsd`. The offline template
  generator spends nothing. A call of a model with no price (not in
  `core/generation/pricing.py` nor `OPENAI_PRICES`) has an unknown cost (`costUsd` NULL): no
  cost column counts it, rather than counting it as free.
- `unpriced`: of `generated`, the emails whose cost is unknown that way; the summary names their
  models (`CampaignReport.unpriced_models`) to add to `OPENAI_PRICES`.
- `cached_tokens`: of the prompt tokens, those read from the provider's prompt cache.
- `sync_cost_usd`, `batch_cost_usd`, `cached_cost_usd`: `cost_usd` split by how it was billed:
  the uncached input and output of synchronous calls (`pricing` `standard` or `flex`, or none
  recorded), the same of Batch API calls (`batch`: drafts written ahead), and the cached input
  tokens of both (`GeneratedMessage.cachedCostUsd`); the three add up to `cost_usd`.
- `saving_usd`: what the batch and flex calls saved against the same calls made synchronously
  at the standard tier (they are billed at half its rates, so it equals their own cost).
- `*_per_1000`: the tokens per 1,000 `generated` emails, and the spend and saving per 1,000
  priced ones (`generated - unpriced`: an email of unknown cost is in neither side of the
  division, so the figure is what 1,000 priced emails cost; the superseded messages' spend is in
  the numerator, not the denominator: it is what 1,000 current emails cost); empty when nothing
  (priced) was generated.
- `due_to_sent_p50_s`, `due_to_sent_p95_s`: seconds from due to sent, where due is the send's
  `EmailSend.scheduledFor` (the first opening of the lead's sending window, as the generation
  flow wrote it, or the later moment the delivery flow moved it to when it deferred the send or
  retried a 4xx) and sent is `sentAt`, over the sends accepted in the window. It measures how
  late delivery picks up a due send, not how long a lead waits for its window. Percentiles are
  linearly interpolated (`percentile_cont`, the same as pandas' default `quantile`).

- `pending_review`, `oldest_pending_review_s`: the review queue (review before send): the
  messages waiting for a person now (`GeneratedMessage.status = 'pending_review'`) that were
  written before `until`, whenever that was, and how long the oldest of them has waited at
  `until`, in seconds; empty when none waits. The campaign row sums the first and takes the
  longest wait. A campaign with a queue is in the report even when nothing else happened.

Beside them, per sending mailbox and UTC day, the deliverability rates of
`core/analytics/mailbox_days.py`, and per step and A/B variant, the counts of
`core/analytics/variant_report.py`.
"""

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from core.analytics.mailbox_days import SEND_COLUMNS, compute_mailbox_days, window_days
from core.analytics.variant_report import SEND_COLUMNS as VARIANT_SEND_COLUMNS
from core.analytics.variant_report import compute_variant_rows, empty_rows

DEFAULT_DAYS = 30

# Counted per (campaign, step) in SQL; campaign rows sum them.
GENERATION_COUNTS = ("generated", "prompt_tokens", "completion_tokens", "cached_tokens", "unpriced")
# USD summed per (campaign, step) in SQL: the total, its split by how it was billed, and what
# the batch and flex calls saved against the same calls made synchronously at the standard tier.
SPEND = ("cost_usd", "sync_cost_usd", "batch_cost_usd", "cached_cost_usd", "saving_usd")
SEND_COUNTS = (
    "scheduled",
    "sent",
    "failed",
    "unique_opens",
    "unique_clicks",
    "machine_opens",
    "machine_clicks",
    "replies",
    "positive_replies",
    "bounces",
    "unsubscribes",
    "complaints",
)
# Numerator -> rate over `sent`.
RATES = {
    "unique_opens": "open_rate",
    "unique_clicks": "click_rate",
    "replies": "reply_rate",
    "positive_replies": "positive_reply_rate",
    "bounces": "bounce_rate",
    "unsubscribes": "unsubscribe_rate",
    "complaints": "complaint_rate",
}
# Tokens -> tokens per 1,000 generated emails; spend -> spend per 1,000 priced ones.
TOKENS_PER_1000 = {
    "prompt_tokens": "prompt_tokens_per_1000",
    "completion_tokens": "completion_tokens_per_1000",
}
SPEND_PER_1000 = {spend: f"{spend}_per_1000" for spend in SPEND}
PER_1000 = TOKENS_PER_1000 | SPEND_PER_1000
LATENCY = ("due_to_sent_p50_s", "due_to_sent_p95_s")
REVIEW_QUEUE = ("pending_review", "oldest_pending_review_s")

# The report's columns, in order; `step` and `enrolled` are empty where they do not apply.
COLUMNS = (
    "level",
    "campaign_id",
    "campaign_name",
    "step",
    "enrolled",
    "generated",
    *SEND_COUNTS,
    *RATES.values(),
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "unpriced",
    *SPEND,
    *PER_1000.values(),
    *LATENCY,
    *REVIEW_QUEUE,
)

# The frames the report is computed from, and their columns (what db/queries/report.py reads).
INPUT_COLUMNS = {
    "campaigns": ("campaign_id", "campaign_name"),
    "steps": ("campaign_id", "step_id", "step"),
    "enrolments": ("campaign_id", "enrolled"),
    "generation": ("campaign_id", "step_id", *GENERATION_COUNTS, *SPEND),
    # Per campaign and model: the generated emails of a model with no price.
    "unpriced_models": ("campaign_id", "model", "unpriced"),
    "sends": ("campaign_id", "step_id", *SEND_COUNTS),
    # step_id empty: the campaign's figure; campaign_id empty too: the whole report's.
    "latency": ("campaign_id", "step_id", *LATENCY),
    "review": ("campaign_id", "step_id", *REVIEW_QUEUE),
    # One row per send handed over in the window, with its mailbox, UTC day and what became of it.
    "mailbox_sends": SEND_COLUMNS,
    # One row per (campaign, step, variant) that sent in the window.
    "variant_sends": VARIANT_SEND_COLUMNS,
    # Per campaign and UTC day: sent sends on their handover's day, replies on their first's.
    "daily": ("campaign_id", "day", "sent", "replies"),
}
# Per campaign and UTC day of the window, zeros included: the report's `daily` frame.
DAILY_COLUMNS = ("campaign_id", "campaign_name", "day", "sent", "replies")


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame(columns=list(INPUT_COLUMNS[name]))


class ReportWindow(BaseModel):
    """What a report covers: [since, until), aware UTC datetimes, and optionally one campaign."""

    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    campaign_id: str | None = None

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # A naive datetime is taken as UTC, as the database stores it.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> "ReportWindow":
        if self.since >= self.until:
            raise ValueError(
                f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})"
            )
        return self

    @classmethod
    def ending(
        cls,
        until: datetime,
        *,
        since: datetime | None = None,
        campaign_id: str | None = None,
        days: int = DEFAULT_DAYS,
    ) -> "ReportWindow":
        """The window ending at until, starting at since or `days` before until."""
        until = until.replace(tzinfo=UTC) if until.tzinfo is None else until
        start = since if since is not None else until - timedelta(days=days)
        return cls(since=start, until=until, campaign_id=campaign_id or None)


@dataclass
class ReportInputs:
    """The frames read from the database, with the columns of INPUT_COLUMNS."""

    campaigns: pd.DataFrame
    steps: pd.DataFrame
    enrolments: pd.DataFrame
    generation: pd.DataFrame
    sends: pd.DataFrame
    latency: pd.DataFrame
    review: pd.DataFrame
    mailbox_sends: pd.DataFrame
    variant_sends: pd.DataFrame = field(default_factory=lambda: _empty("variant_sends"))
    daily: pd.DataFrame = field(default_factory=lambda: _empty("daily"))
    unpriced_models: pd.DataFrame = field(default_factory=lambda: _empty("unpriced_models"))

    @classmethod
    def empty(cls) -> "ReportInputs":
        """No campaigns and nothing in the window."""
        return cls(**{name: _empty(name) for name in INPUT_COLUMNS})


@dataclass
class CampaignReport:
    """The computed report: one row per campaign step, one total row per campaign, one row
    per sending mailbox and UTC day, and one per step variant."""

    window: ReportWindow
    steps: pd.DataFrame
    campaigns: pd.DataFrame
    mailbox_days: pd.DataFrame
    # The whole report's due-to-sent (p50, p95) in seconds, every campaign's sends together.
    overall_latency: tuple[float | None, float | None] = (None, None)
    variants: pd.DataFrame = field(default_factory=empty_rows)
    # Per campaign and UTC day of the window (DAILY_COLUMNS): sends and replies over time.
    daily: pd.DataFrame = field(default_factory=lambda: empty_daily())
    # Per model with no price, every campaign's: its generated emails (`unpriced`), most first.
    unpriced_models: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {"model": pd.Series(dtype="object"), "unpriced": pd.Series(dtype="int64")}
        )
    )

    def frame(self) -> pd.DataFrame:
        """Every row for the output file: each campaign's steps, then its total row."""
        rows = pd.concat([self.steps, self.campaigns], ignore_index=True)
        rows["_total"] = rows["level"] == "campaign"
        rows = rows.sort_values(
            ["campaign_name", "campaign_id", "_total", "step"], kind="stable", na_position="last"
        )
        return rows.drop(columns="_total").reset_index(drop=True)[list(COLUMNS)]

    def table(
        self, level: Literal["step", "campaign", "mailbox_day", "variant"]
    ) -> list[dict[str, object]]:
        """Rows of one level for a table artifact: plain JSON values."""
        frame = {
            "step": self.steps,
            "campaign": self.campaigns,
            "mailbox_day": self.mailbox_days,
            "variant": self.variants,
        }
        rows = frame[level].to_dict("records")
        return [{str(k): _plain(v) for k, v in row.items()} for row in rows]

    def totals(self) -> dict[str, float | int | None]:
        """Every campaign together: the counts summed, the rates and spend per 1,000 again."""
        sums: dict[str, float | int | None] = {
            name: _number(self.campaigns[name].sum())
            for name in ("enrolled", *GENERATION_COUNTS, *SPEND, *SEND_COUNTS, "pending_review")
        }
        sent, generated = sums["sent"] or 0, sums["generated"] or 0
        priced = generated - (sums["unpriced"] or 0)
        for count, rate in RATES.items():
            sums[rate] = (sums[count] or 0) / sent if sent else None
        for tokens, per in TOKENS_PER_1000.items():
            sums[per] = (sums[tokens] or 0) * 1000 / generated if generated else None
        for spend, per in SPEND_PER_1000.items():
            sums[per] = (sums[spend] or 0) * 1000 / priced if priced else None
        sums["due_to_sent_p50_s"], sums["due_to_sent_p95_s"] = self.overall_latency
        sums["oldest_pending_review_s"] = _number(self.campaigns["oldest_pending_review_s"].max())
        return sums


def compute_campaign_report(inputs: ReportInputs, window: ReportWindow) -> CampaignReport:
    """The report's step and campaign rows from the frames read for window.

    A campaign is in the report when it had anything in the window (an enrolment, a message,
    a send), or when it is the one campaign asked for; each of its steps gets a row, zeros
    included, so the funnel shows where leads stop.
    """
    campaigns = _campaigns_in_report(inputs, window)
    steps = inputs.steps.loc[inputs.steps["campaign_id"].isin(campaigns["campaign_id"])]
    keys = ["campaign_id", "step_id"]
    # Frames from before the spend split have no split columns: they count as nothing.
    generation = inputs.generation.reindex(columns=INPUT_COLUMNS["generation"], fill_value=0)
    per_step = (
        campaigns.merge(steps[[*keys, "step"]], on="campaign_id", how="inner")
        .merge(_numeric(generation, keys), on=keys, how="left")
        .merge(_numeric(inputs.sends, keys), on=keys, how="left")
    )
    _fill_counts(per_step)
    step_latency = inputs.latency.loc[inputs.latency["step_id"].notna(), [*keys, *LATENCY]]
    per_step = per_step.merge(_float(step_latency, LATENCY), on=keys, how="left")
    per_step = per_step.merge(_float(inputs.review, REVIEW_QUEUE), on=keys, how="left")
    per_step["pending_review"] = per_step["pending_review"].fillna(0).astype("int64")
    per_step["level"] = "step"
    per_step["enrolled"] = pd.Series(pd.NA, index=per_step.index, dtype="Int64")
    per_step["step"] = per_step["step"].astype("Int64")

    additive = [*GENERATION_COUNTS, *SPEND, *SEND_COUNTS, "pending_review"]
    by_campaign = per_step.groupby("campaign_id", sort=False)
    summed = by_campaign[additive].sum().reset_index()
    summed["oldest_pending_review_s"] = by_campaign["oldest_pending_review_s"].max().to_numpy()
    per_campaign = campaigns.merge(summed, on="campaign_id", how="left")
    enrolled = _numeric(inputs.enrolments, ["campaign_id"])
    per_campaign = per_campaign.merge(enrolled, on="campaign_id", how="left")
    _fill_counts(per_campaign)
    per_campaign["enrolled"] = per_campaign["enrolled"].astype("Int64")
    campaign_rows = inputs.latency["campaign_id"].notna() & inputs.latency["step_id"].isna()
    campaign_latency = inputs.latency.loc[campaign_rows, ["campaign_id", *LATENCY]]
    per_campaign = per_campaign.merge(
        _float(campaign_latency, LATENCY), on="campaign_id", how="left"
    )
    per_campaign["level"] = "campaign"
    per_campaign["step"] = pd.Series(pd.NA, index=per_campaign.index, dtype="Int64")

    overall = inputs.latency.loc[inputs.latency["campaign_id"].isna(), list(LATENCY)]
    overall_latency: tuple[float | None, float | None] = (None, None)
    if len(overall):
        p50, p95 = (_native(overall.iloc[0][name]) for name in LATENCY)
        overall_latency = (_as_float(p50), _as_float(p95))

    return CampaignReport(
        window=window,
        steps=_sorted(_derive(per_step), "step"),
        campaigns=_sorted(_derive(per_campaign)),
        mailbox_days=compute_mailbox_days(inputs.mailbox_sends, window.since, window.until),
        overall_latency=overall_latency,
        variants=compute_variant_rows(
            inputs.variant_sends,
            per_step[["campaign_id", "campaign_name", "step_id", "step"]],
        ),
        daily=compute_daily(inputs.daily, campaigns, window_days(window.since, window.until)),
        unpriced_models=_unpriced_models(inputs.unpriced_models, campaigns),
    )


def _unpriced_models(frame: pd.DataFrame, campaigns: pd.DataFrame) -> pd.DataFrame:
    """The generated emails of each model with no price, the report's campaigns together, most
    first (then by model)."""
    mine = frame.loc[frame["campaign_id"].isin(campaigns["campaign_id"])]
    counts = mine.groupby("model", sort=False)["unpriced"].sum().astype("int64").reset_index()
    return counts.sort_values(["unpriced", "model"], ascending=[False, True], kind="stable")[
        ["model", "unpriced"]
    ].reset_index(drop=True)


def empty_daily() -> pd.DataFrame:
    """A daily frame with no rows and DAILY_COLUMNS."""
    return pd.DataFrame(
        {
            name: pd.Series(dtype="int64" if name in ("sent", "replies") else "object")
            for name in DAILY_COLUMNS
        }
    )


def compute_daily(daily: pd.DataFrame, campaigns: pd.DataFrame, days: list[str]) -> pd.DataFrame:
    """One row per campaign of the report and UTC day of the window, zeros included, by
    campaign name: how many of its emails were sent that day, and how many first replies came."""
    if campaigns.empty:
        return empty_daily()
    counts = daily.assign(day=pd.to_datetime(daily["day"]).dt.strftime("%Y-%m-%d"))
    counts = counts.groupby(["campaign_id", "day"])[["sent", "replies"]].sum()
    ordered = campaigns.sort_values(["campaign_name", "campaign_id"], kind="stable")
    grid = pd.MultiIndex.from_product(
        [ordered["campaign_id"].tolist(), days], names=["campaign_id", "day"]
    )
    rows = counts.reindex(grid, fill_value=0).astype("int64").reset_index()
    rows = rows.merge(ordered[["campaign_id", "campaign_name"]], on="campaign_id", how="left")
    return rows[list(DAILY_COLUMNS)]


def _sorted(frame: pd.DataFrame, *then: str) -> pd.DataFrame:
    """By campaign name (then id, then the given columns), with the report's columns."""
    keys = ["campaign_name", "campaign_id", *then]
    return frame.sort_values(keys, kind="stable")[list(COLUMNS)].reset_index(drop=True)


def _campaigns_in_report(inputs: ReportInputs, window: ReportWindow) -> pd.DataFrame:
    campaigns = inputs.campaigns[["campaign_id", "campaign_name"]]
    if window.campaign_id is not None:
        chosen = campaigns.loc[campaigns["campaign_id"] == window.campaign_id]
        if chosen.empty:
            raise ValueError(f"no campaign with id {window.campaign_id!r}")
        return chosen.reset_index(drop=True)
    active = set(inputs.enrolments["campaign_id"])
    active |= set(inputs.generation["campaign_id"]) | set(inputs.sends["campaign_id"])
    active |= set(inputs.review["campaign_id"])
    return campaigns.loc[campaigns["campaign_id"].isin(active)].reset_index(drop=True)


def _numeric(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A count frame with its value columns numeric (an empty read has object columns)."""
    values = [c for c in frame.columns if c not in keys and c not in ("step",)]
    out = frame[[*keys, *values]].copy()
    for column in values:
        out[column] = pd.to_numeric(out[column])
    return out


def _float(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = frame.copy()
    for column in columns:
        out[column] = pd.to_numeric(out[column]).astype("float64")
    return out


def _fill_counts(frame: pd.DataFrame) -> None:
    """Zero where a step or campaign had nothing; counts as integers, the cost as a float."""
    for column in (*GENERATION_COUNTS, *SEND_COUNTS, "enrolled", "pending_review"):
        if column in frame:
            frame[column] = frame[column].fillna(0).astype("int64")
    # Summed costs are rounded back to costUsd's own precision (NUMERIC(12, 6)).
    for column in SPEND:
        frame[column] = frame[column].fillna(0).astype("float64").round(6)


def _derive(frame: pd.DataFrame) -> pd.DataFrame:
    """Rates over sent and spend per 1,000 generated; empty (NaN) where the denominator is 0."""
    out = frame.copy()
    sent = out["sent"].where(out["sent"] > 0)
    for count, rate in RATES.items():
        out[rate] = (out[count] / sent).astype("float64")
    generated = out["generated"].where(out["generated"] > 0)
    for tokens, per in TOKENS_PER_1000.items():
        out[per] = (out[tokens] * 1000 / generated).astype("float64")
    # Emails of unknown cost are in neither side of the division: not free, just not counted.
    priced = out["generated"] - out["unpriced"]
    priced = priced.where(priced > 0)
    for spend, per in SPEND_PER_1000.items():
        out[per] = (out[spend] * 1000 / priced).astype("float64")
    return out


def _native(value: object) -> object:
    """A JSON-friendly value: None for NA/NaN, Python numbers for numpy ones."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _number(value: object) -> float | int | None:
    """A summed count or spend as a Python number, None for NA."""
    value = _native(value)
    return value if isinstance(value, float | int) else None


def _plain(value: object) -> object:
    """A JSON-friendly value with floats rounded to 6 places (costUsd's own precision)."""
    value = _native(value)
    return round(value, 6) if isinstance(value, float) else value


def _as_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


# The summary --------------------------------------------------------------------------------


def _pct(value: object) -> str:
    return "–" if not isinstance(value, int | float) else f"{value * 100:.1f}%"


def _money(value: object) -> str:
    return "–" if not isinstance(value, int | float) else f"${value:,.4f}"


def human_duration(seconds: object) -> str:
    """Seconds as a short human duration: 42 s, 7.5 min, 3.2 h, 1.5 d."""
    if not isinstance(seconds, int | float):
        return "–"
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if abs(seconds) < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _oldest(seconds: object) -> str:
    """How long the oldest pending message has waited, when any waits."""
    return "" if not isinstance(seconds, int | float) else f", oldest {human_duration(seconds)}"


def _cell(text: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def headline(total: dict[str, float | int | None]) -> list[tuple[str, str]]:
    """The numbers an analyst reads first, as (label, text), from `CampaignReport.totals`:
    sent, and of the sent the reply, positive reply, bounce and unsubscribe rates."""
    return [
        ("sent", f"{total['sent'] or 0:,}"),
        ("reply rate", _pct(total["reply_rate"])),
        ("positive reply rate", _pct(total["positive_reply_rate"])),
        ("bounce rate", _pct(total["bounce_rate"])),
        ("unsubscribe rate", _pct(total["unsubscribe_rate"])),
    ]


def summary_markdown(report: CampaignReport, charts: str | None = None) -> str:
    """The report's markdown artifact: the window, the headline numbers, a link to the charts
    (the HTML file's URI, when one was written), the totals, then one line per campaign."""
    window = report.window
    total = report.totals()
    scope = f"campaign `{_cell(window.campaign_id)}`" if window.campaign_id else "all campaigns"
    lines = [
        "# campaign-report",
        "",
        f"From **{window.since.isoformat()}** to **{window.until.isoformat()}** "
        f"(until excluded), {scope}: {len(report.campaigns)} campaign(s).",
        "",
        " · ".join(f"{label} **{value}**" for label, value in headline(total)),
        "",
        f"Charts: [{PurePath(charts).name}]({charts})"
        if charts
        else "Charts: none written (run with `output` to write them beside the file).",
        "",
        f"- enrolled {total['enrolled']}, generated {total['generated']}, "
        f"scheduled {total['scheduled']}, sent {total['sent']}, failed {total['failed']}",
        f"- of the sent: opened {_pct(total['open_rate'])}, clicked {_pct(total['click_rate'])}, "
        f"replied {_pct(total['reply_rate'])} (positive {_pct(total['positive_reply_rate'])}), "
        f"bounced {_pct(total['bounce_rate'])}, "
        f"unsubscribed {_pct(total['unsubscribe_rate'])}, "
        f"complained {_pct(total['complaint_rate'])}",
        f"- opened by machines only {total['machine_opens']}, clicked by machines only "
        f"{total['machine_clicks']} (Apple Mail Privacy Protection, link scanners: not in the "
        "rates)",
        f"- LLM: {total['prompt_tokens']:,} prompt + {total['completion_tokens']:,} completion "
        f"tokens, {_money(total['cost_usd'])}; per 1,000 emails "
        f"{_money(total['cost_usd_per_1000'])}: synchronous "
        f"{_money(total['sync_cost_usd_per_1000'])}, "
        f"batch {_money(total['batch_cost_usd_per_1000'])}, "
        f"cached input {_money(total['cached_cost_usd_per_1000'])}; saved "
        f"{_money(total['saving_usd_per_1000'])} per 1,000 against all-synchronous",
        *_unpriced_lines(report.unpriced_models, total),
        f"- due to sent: p50 {human_duration(total['due_to_sent_p50_s'])}, "
        f"p95 {human_duration(total['due_to_sent_p95_s'])}",
        f"- review queue: {total['pending_review']} pending"
        + _oldest(total["oldest_pending_review_s"]),
        "",
        "Rates are over sent emails (their events before the window's end, each email counted "
        "once per event type); LLM cost is per 1,000 generated emails that have a price; due is "
        "`EmailSend.scheduledFor`.",
    ]
    if report.campaigns.empty:
        return "\n".join([*lines, "", "Nothing happened in this window."]) + "\n"
    lines += [
        "",
        "| campaign | enrolled | generated | sent | open | click | reply | bounce | unsub "
        "| LLM $ / 1,000 | due→sent p50 | p95 | pending review |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for row in report.campaigns.to_dict("records"):
        name = f"{_cell(row['campaign_name'])} (`{_cell(row['campaign_id'])}`)"
        lines.append(
            f"| {name} | {row['enrolled']} | {row['generated']} | {row['sent']} "
            f"| {_pct(_plain(row['open_rate']))} | {_pct(_plain(row['click_rate']))} "
            f"| {_pct(_plain(row['reply_rate']))} | {_pct(_plain(row['bounce_rate']))} "
            f"| {_pct(_plain(row['unsubscribe_rate']))} "
            f"| {_money(_plain(row['cost_usd_per_1000']))} "
            f"| {human_duration(_plain(row['due_to_sent_p50_s']))} "
            f"| {human_duration(_plain(row['due_to_sent_p95_s']))} "
            f"| {row['pending_review']}{_oldest(_plain(row['oldest_pending_review_s']))} |"
        )
    return "\n".join([*lines, *_variant_lines(report.variants)]) + "\n"


def _unpriced_lines(models: pd.DataFrame, total: dict[str, float | int | None]) -> list[str]:
    """Under the spend: the emails whose model has no price, by model, and what to do."""
    unpriced = int(total["unpriced"] or 0)
    if not unpriced:
        return []
    priced = int(total["generated"] or 0) - unpriced
    lines = [
        f"  - spend leaves out {unpriced:,} email(s) of unknown cost: the spend, per-1,000 and "
        f"saving figures are over the {priced:,} priced one(s) only"
    ]
    lines += [
        f"  - {int(row['unpriced']):,} email(s) by model `{_cell(row['model'])}` have no price; "
        "add it to OPENAI_PRICES"
        for row in models.to_dict("records")
    ]
    return lines


def _variant_lines(variants: pd.DataFrame) -> list[str]:
    """The A/B section: one table row per step variant that sent; none without variants."""
    if variants.empty:
        return []
    lines = [
        "",
        "## A/B variants",
        "",
        "| campaign | step | variant | sent | replies | positive | unsub | bounce | clicks "
        "| reply | positive | compared on | p vs best |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    verdicts: dict[tuple[str, str, int], str] = {}
    for row in variants.to_dict("records"):
        p_value = _plain(row["p_value"])
        lines.append(
            f"| {_cell(row['campaign_name'])} | {row['step']} | {_cell(row['variant'])} "
            f"| {row['sent']} | {row['replies']} | {row['positive_replies']} "
            f"| {row['unsubscribes']} | {row['bounces']} | {row['unique_clicks']} "
            f"| {_pct(_plain(row['reply_rate']))} | {_pct(_plain(row['positive_reply_rate']))} "
            f"| {row['metric']} | {'–' if p_value is None else f'{p_value:.3g}'} |"
        )
        step = (str(row["campaign_id"]), str(row["campaign_name"]), int(row["step"]))
        verdicts[step] = str(row["verdict"])
    lines.append("")
    lines += [f"- {_cell(name)}, step {step}: {text}" for (_, name, step), text in verdicts.items()]
    lines += ["", "Clicks are human clicks: those a machine made (`isMachine`) are left out."]
    return lines


# The output file ---------------------------------------------------------------------------


class ReportOutputError(ValueError):
    """The output path cannot be written as a report (unknown suffix, missing package)."""


OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet"}


def mailbox_days_output(path: str) -> str:
    """Where the per-mailbox days go beside the report's file: `report.csv` ->
    `report-mailbox-days.csv` (their columns are not the report's)."""
    return _beside(path, "mailbox-days")


def variants_output(path: str) -> str:
    """Where the per-variant rows go beside the report's file: `report-variants.csv`."""
    return _beside(path, "variants")


def _beside(path: str, name: str) -> str:
    output = PurePath(path)
    return str(output.with_name(f"{output.stem}-{name}{output.suffix}"))


def charts_output(path: str) -> str:
    """Where the HTML page of charts goes beside the report's file: `report.csv` ->
    `report.html`."""
    return str(PurePath(path).with_suffix(".html"))


def output_format(path: str) -> str:
    """`csv` or `parquet`, from the path's suffix (any case); anything else is an error."""
    suffix = PurePath(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ReportOutputError(
            f"output {path!r}: the file name must end in .csv or .parquet, "
            f"not {suffix or '(no suffix)'!r}"
        )
    return OUTPUT_FORMATS[suffix]
