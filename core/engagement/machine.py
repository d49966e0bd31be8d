"""Which opens and clicks a machine made, and by which rule.

An open or a click is a machine's when, checked in this order:

1. `provider-flag`: the provider says so: SendGrid's `sg_machine_open`, any Mailgun
   `client-info.bot` (`apple`, `gmail`, `generic`).
2. `apple-mpp`: an open fetched by Apple Mail Privacy Protection's proxy, which preloads every
   image when the message arrives: its user agent is the bare `Mozilla/5.0` (Mailgun's and
   SendGrid's MPP guides), or its address is in 17.0.0.0/8, the network ARIN assigns to Apple
   Inc. (whois NET-17-0-0-0-0, AS714).
3. `scanner-user-agent`: a user agent `crawlerdetect` knows as a bot, crawler or HTTP library
   (Barracuda, bingbot, python-requests, curl, HeadlessChrome...), or a click with no user agent
   but `Mozilla/5.0`. The image proxies that fetch when a person opens (Gmail's
   GoogleImageProxy, YahooMailProxy) and Outlook's own user agents are people's, although
   crawlerdetect lists them.
4. `click-too-soon-after-delivery`: a click less than `click_window` after its email was sent:
   the security gateways (Safe Links, Mimecast, Proofpoint) that follow every link on arrival
   often use a browser's or a cloud host's user agent, but nobody reads and clicks that fast.
5. `all-links-same-second`: a click within `burst` of a click on another link of the same email:
   a scanner sweeping the message's links; nobody clicks two links in one second.

The last two need the email's send time and its other clicks, so ingestion classifies each
event by the first three as it is read, then applies the two timing rules again to every click
of each email that got a new one, with all of its clicks, in one SQL statement
(`db.queries.engagement.MARK_MACHINE_CLICKS`). This module stays their definition: a property
test holds the statement to `classify_engagement` on random clicks. A rule only ever adds a
verdict, so the result does not depend on the order events arrive in.
"""

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from crawlerdetect import CrawlerDetect
from pydantic import BaseModel, ConfigDict, Field

from core.settings import Settings
from core.statuses import EngagementType


class MachineReason(StrEnum):
    """Why an open or a click is taken for a machine's (EngagementEvent.machineReason)."""

    provider_flag = "provider-flag"
    apple_mpp = "apple-mpp"
    scanner_user_agent = "scanner-user-agent"
    click_too_soon_after_delivery = "click-too-soon-after-delivery"
    all_links_same_second = "all-links-same-second"


class MachineVerdict(BaseModel):
    """An event's classification: human (`is_machine` false, no reason) or a machine's, and why."""

    model_config = ConfigDict(frozen=True)

    is_machine: bool = False
    reason: MachineReason | None = None


HUMAN = MachineVerdict()


class MachineRules(BaseModel):
    """The timing rules' thresholds (MACHINE_CLICK_WINDOW_SECONDS, MACHINE_CLICK_BURST_SECONDS)."""

    model_config = ConfigDict(frozen=True)

    click_window: timedelta = Field(default=timedelta(seconds=10), ge=timedelta(0))
    burst: timedelta = Field(default=timedelta(seconds=1), ge=timedelta(0))

    @classmethod
    def from_settings(cls, settings: Settings) -> "MachineRules":
        return cls(
            click_window=timedelta(seconds=settings.machine_click_window_seconds),
            burst=timedelta(seconds=settings.machine_click_burst_seconds),
        )


class Engagement(Protocol):
    """What classifying an open or a click reads (a `NormalisedEvent`)."""

    @property
    def type(self) -> EngagementType: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def url(self) -> str | None: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def provider_machine(self) -> bool: ...


DEFAULT_RULES = MachineRules()
_APPLE = ipaddress.ip_network("17.0.0.0/8")
_GENERIC_USER_AGENT = "Mozilla/5.0"
# Fetched when a person opens or clicks, though crawlerdetect lists them (lowercase).
_PEOPLES_AGENTS = ("googleimageproxy", "yahoomailproxy", "microsoft outlook", "microsoft office")
_CLASSIFIED = (EngagementType.open, EngagementType.click)


def classify_engagement(
    event: Engagement,
    *,
    delivered_at: datetime | None = None,
    sibling_clicks: Sequence[Engagement] = (),
    rules: MachineRules = DEFAULT_RULES,
) -> MachineVerdict:
    """The event's verdict by the rules above; `delivered_at` (the send's `sentAt`) and
    `sibling_clicks` (the email's clicks, the event's own included or not) feed the timing rules
    and may be left out when not known yet. Other event types are always human."""
    if event.type not in _CLASSIFIED:
        return HUMAN
    reason = _by_signals(event) or _by_timing(event, delivered_at, sibling_clicks, rules)
    return MachineVerdict(is_machine=True, reason=reason) if reason else HUMAN


def _by_signals(event: Engagement) -> MachineReason | None:
    if event.provider_machine:
        return MachineReason.provider_flag
    agent = (event.user_agent or "").strip()
    if event.type is EngagementType.open and (
        agent == _GENERIC_USER_AGENT or _in_apple_network(event.ip)
    ):
        return MachineReason.apple_mpp
    if agent == _GENERIC_USER_AGENT or (agent and _is_scanner(agent)):
        return MachineReason.scanner_user_agent
    return None


def _by_timing(
    event: Engagement,
    delivered_at: datetime | None,
    siblings: Sequence[Engagement],
    rules: MachineRules,
) -> MachineReason | None:
    if event.type is not EngagementType.click:
        return None
    if (
        rules.click_window
        and delivered_at is not None
        and event.occurred_at - delivered_at < rules.click_window
    ):
        return MachineReason.click_too_soon_after_delivery
    if rules.burst and any(
        other.type is EngagementType.click
        and other.url != event.url
        and abs(other.occurred_at - event.occurred_at) <= rules.burst
        for other in siblings
    ):
        return MachineReason.all_links_same_second
    return None


def _in_apple_network(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        return ipaddress.ip_address(ip.strip()) in _APPLE
    except ValueError:
        return False


@lru_cache(maxsize=1)
def _detector() -> CrawlerDetect:
    return CrawlerDetect()


@lru_cache(maxsize=8192)
def _is_scanner(agent: str) -> bool:
    # crawlerdetect's one large pattern costs milliseconds per agent; a campaign's events come
    # from a few hundred distinct agents, so each is matched once.
    if any(people in agent.lower() for people in _PEOPLES_AGENTS):
        return False
    return bool(_detector().is_crawler(agent))
