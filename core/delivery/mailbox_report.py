"""The run's per-mailbox table: what each sending mailbox did in the run, and where it stands.

One line per sending mailbox the run touched (workspace and address), whatever campaigns it sent
for: this run's sent, deferred (and the main reasons why) and bounced; today's effective cap and
the handovers counted against it; the last 7 days' health; its status and reason. A mailbox
with no `Mailbox` row is listed too, as sending through the global SMTP_* login.

The database's side (`MailboxFacts`) is read once, at the end of the run, by the task that feeds
the artifact; this module only combines it with the run's counts.
"""

from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.campaigns.sending_rules import parse_sending_rules
from core.delivery.accounts import mailbox_key
from core.delivery.plan import campaign_days, delivery_rules_problem, mailbox_cap
from core.delivery.report import DeliveryColumn, DeliveryCounts, DeliveryReport
from core.mailboxes.health import MailboxHealth, percent
from core.mailboxes.warmup import Warmup
from core.statuses import MailboxStatus

# (workspace id, lowercased address), as in core.delivery.accounts.
MailboxKey = tuple[str, str]

# How many deferral reasons a line names; the others are counted as "+N more".
MAIN_REASONS = 3
GLOBAL_LOGIN = "global SMTP_*"
OWN_LOGIN = "mailbox row"


class CampaignSender(BaseModel):
    """A campaign's workspace, where its addresses' `Mailbox` rows are, and its raw rules."""

    model_config = ConfigDict(frozen=True)

    workspace_id: str
    sending_rules: Any = None  # as the web app stored it, checked when used


class MailboxStanding(BaseModel):
    """One sending mailbox as the database has it at the end of the run."""

    model_config = ConfigDict(frozen=True)

    status: MailboxStatus | None  # None: no `Mailbox` row, the global SMTP_* login
    reason: str | None
    warmup: Warmup | None
    used_today: int | None  # handovers counted against today's cap; None: its day is unknown
    health: MailboxHealth  # over the last 7 days (HEALTH_WINDOW)


class MailboxFacts(BaseModel):
    """What the run's per-mailbox table needs from the database, read at `at`."""

    at: datetime
    campaigns: dict[str, CampaignSender]
    standings: dict[MailboxKey, MailboxStanding]


def counting_days(
    report: DeliveryReport, campaigns: Mapping[str, CampaignSender], now: datetime
) -> dict[MailboxKey, datetime | None]:
    """The mailboxes of the run's table, each with the day its cap counts from (as the plan
    counts it: `DeliveryCounter`), or None when no campaign of it has usable rules any more."""
    lines = _lines_by_mailbox(report, campaigns)
    used_by = sorted({line.campaign_id for found in lines.values() for line in found})
    days = campaign_days({c: campaigns[c].sending_rules for c in used_by}, now).mailboxes
    return {key: days.get(key[1]) for key in lines}


def mailbox_table(report: DeliveryReport, facts: MailboxFacts) -> list[dict[str, str | int | None]]:
    """One line per sending mailbox of the run, sorted by workspace and address."""
    rows: list[dict[str, str | int | None]] = []
    for key, lines in sorted(_lines_by_mailbox(report, facts.campaigns).items()):
        standing = facts.standings[key]
        total = DeliveryCounts(campaign_id="", mailbox=lines[0].mailbox)
        for line in lines:
            total.add(line)
            total.reasons.update(line.reasons)
        health = standing.health
        rows.append(
            {
                "workspace_id": key[0],
                "mailbox": total.mailbox,
                "login": GLOBAL_LOGIN if standing.status is None else OWN_LOGIN,
                "status": "-" if standing.status is None else standing.status.value,
                "reason": standing.reason or "",
                "sent": total.sent,
                "deferred": total.deferred,
                "why": compact_reasons(total.reasons_of(DeliveryColumn.deferred)),
                "bounced": total.bounced,
                "cap_today": _cap(key[1], lines, facts, standing),
                "used_today": standing.used_today,
                "sends_7d": health.sends,
                "hard_bounces_7d": health.hard_bounces,
                "hard_bounce_rate_7d": percent(health.hard_bounce_rate),
                "complaints_7d": health.complaints,
                "complaint_rate_7d": percent(health.complaint_rate),
            }
        )
    return rows


def compact_reasons(reasons: Counter[str]) -> str:
    """The most frequent reasons with their counts, the rest summed up as `+N more`."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    named = "; ".join(f"{reason} ×{n}" for reason, n in ranked[:MAIN_REASONS])
    rest = sum(n for _, n in ranked[MAIN_REASONS:])
    return f"{named}; +{rest} more" if rest else named


def _lines_by_mailbox(
    report: DeliveryReport, campaigns: Mapping[str, CampaignSender]
) -> dict[MailboxKey, list[DeliveryCounts]]:
    """The report's (campaign, mailbox) lines grouped by mailbox of a workspace.

    Lines with no mailbox (a campaign whose rules name none) and lines of a campaign no longer
    in the database have no mailbox to show.
    """
    lines: dict[MailboxKey, list[DeliveryCounts]] = defaultdict(list)
    for line in report.rows.values():
        sender = campaigns.get(line.campaign_id)
        if line.mailbox != "-" and sender is not None:
            lines[mailbox_key(sender.workspace_id, line.mailbox)].append(line)
    return lines


def _cap(
    email: str, lines: list[DeliveryCounts], facts: MailboxFacts, standing: MailboxStanding
) -> int | str | None:
    """Today's cap, as the plan applies it: a row's warm-up cap; else each campaign's cap from
    its sendingRules, `30/50` when the campaigns sharing the address disagree."""
    if standing.warmup is not None:
        return standing.warmup.cap(facts.at)
    caps = set()
    for campaign_id in {line.campaign_id for line in lines}:
        raw = facts.campaigns[campaign_id].sending_rules
        if delivery_rules_problem(raw) is not None:
            continue
        rules = parse_sending_rules(raw)
        caps |= {
            mailbox_cap(mailbox, rules, None)
            for mailbox in rules.sending_mailboxes()
            if mailbox.email.lower() == email
        }
    if not caps:
        return None
    return caps.pop() if len(caps) == 1 else "/".join(str(cap) for cap in sorted(caps))
