"""Telling machines' opens and clicks from people's: each rule, and the providers' fields."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.engagement.event_files import parse_record, read_event_file
from core.engagement.event_records import EventFormat
from core.engagement.events import Malformed, NormalisedEvent
from core.engagement.machine import (
    MachineReason,
    MachineRules,
    MachineVerdict,
    classify_engagement,
)
from core.engagement.report import IngestReport
from core.settings import Settings
from core.statuses import EngagementType

SENT = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
MACHINE = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "machine"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/122.0.0.0 Safari/537.36"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"


def event(kind: EngagementType = EngagementType.open, after=timedelta(hours=1), **fields):
    values = {"type": kind, "occurred_at": SENT + after, "provider": "generic", "source": "test"}
    return NormalisedEvent(**(values | fields))


def click(after: timedelta, url: str) -> NormalisedEvent:
    """A click as the timing rules see it: no user agent or address."""
    return event(EngagementType.click, after=after, url=url)


def reason(verdict: MachineVerdict) -> MachineReason | None:
    assert verdict.is_machine is (verdict.reason is not None)
    return verdict.reason


def test_the_providers_own_flag_wins_over_everything_else():
    flagged = event(provider_machine=True, user_agent=CHROME)
    assert reason(classify_engagement(flagged)) is MachineReason.provider_flag


@pytest.mark.parametrize(
    ("user_agent", "ip"),
    [("Mozilla/5.0", "203.0.113.9"), (CHROME, "17.58.63.12"), (None, "17.1.2.3")],
)
def test_an_open_by_apples_proxy_is_mpp(user_agent, ip):
    opened = event(user_agent=user_agent, ip=ip)
    assert reason(classify_engagement(opened)) is MachineReason.apple_mpp


def test_an_address_that_is_not_one_is_no_evidence():
    assert reason(classify_engagement(event(user_agent=CHROME, ip="not-an-ip"))) is None


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
        "python-requests/2.31.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0",
    ],
)
def test_a_scanners_user_agent_is_a_machines(user_agent):
    for kind in (EngagementType.open, EngagementType.click):
        found = classify_engagement(event(kind, user_agent=user_agent))
        assert reason(found) is MachineReason.scanner_user_agent


def test_a_click_with_the_bare_generic_agent_is_a_scanner_not_apple():
    found = classify_engagement(event(EngagementType.click, user_agent="Mozilla/5.0"))
    assert reason(found) is MachineReason.scanner_user_agent


@pytest.mark.parametrize(
    "user_agent", [GMAIL_PROXY, OUTLOOK, "YahooMailProxy; https://help.yahoo.com"]
)
def test_mail_clients_and_proxies_that_fetch_for_a_person_are_people(user_agent):
    assert reason(classify_engagement(event(user_agent=user_agent))) is None


def test_a_click_seconds_after_delivery_is_a_machines_and_minutes_after_a_persons():
    soon = event(EngagementType.click, after=timedelta(seconds=1), user_agent=CHROME)
    later = event(EngagementType.click, after=timedelta(minutes=3), user_agent=CHROME)
    assert reason(classify_engagement(soon, delivered_at=SENT)) is (
        MachineReason.click_too_soon_after_delivery
    )
    assert reason(classify_engagement(later, delivered_at=SENT)) is None
    # Unknown send time: the rule cannot apply. An open is never timed.
    assert reason(classify_engagement(soon)) is None
    opened = event(after=timedelta(seconds=1), user_agent=CHROME)
    assert reason(classify_engagement(opened, delivered_at=SENT)) is None


def test_links_clicked_together_are_a_sweep_whichever_click_is_classified():
    sweep = [
        click(timedelta(minutes=5, milliseconds=200), "https://a.example/pricing"),
        click(timedelta(minutes=5, milliseconds=900), "https://a.example/book"),
        click(timedelta(minutes=5, milliseconds=500), "https://a.example/case"),
    ]
    for one in sweep:
        found = classify_engagement(one, delivered_at=SENT, sibling_clicks=sweep)
        assert reason(found) is MachineReason.all_links_same_second


def test_the_same_link_twice_or_two_links_seconds_apart_are_a_person():
    double = [click(timedelta(minutes=5), "https://a.example/x")] * 2
    apart = [
        click(timedelta(minutes=5), "https://a.example/x"),
        click(timedelta(minutes=5, seconds=3), "https://a.example/y"),
    ]
    for clicks in (double, apart):
        for one in clicks:
            assert (
                reason(classify_engagement(one, delivered_at=SENT, sibling_clicks=clicks)) is None
            )


def test_zero_turns_each_timing_rule_off():
    off = MachineRules(click_window=timedelta(0), burst=timedelta(0))
    soon = click(timedelta(seconds=1), "https://a.example/x")
    pair = [soon, click(timedelta(seconds=1), "https://a.example/y")]
    assert (
        reason(classify_engagement(soon, delivered_at=SENT, sibling_clicks=pair, rules=off)) is None
    )


def test_the_settings_give_the_timing_rules_their_thresholds():
    settings = Settings(machine_click_window_seconds=30, machine_click_burst_seconds=2)
    rules = MachineRules.from_settings(settings)
    assert (rules.click_window, rules.burst) == (timedelta(seconds=30), timedelta(seconds=2))
    assert MachineRules() == MachineRules.from_settings(Settings())


def test_only_opens_and_clicks_are_ever_a_machines():
    reply = event(EngagementType.reply, provider_machine=True, user_agent="curl/8.4.0")
    assert classify_engagement(reply) == MachineVerdict()


def test_each_provider_export_yields_the_user_agent_address_and_flag():
    read = {
        name: [r for r in read_event_file(MACHINE / name) if isinstance(r, NormalisedEvent)]
        for name in ("sendgrid.json", "mailgun.jsonl", "postmark.json")
    }
    sendgrid_mpp = read["sendgrid.json"][0]
    assert (sendgrid_mpp.provider_machine, sendgrid_mpp.user_agent, sendgrid_mpp.ip) == (
        True, "Mozilla/5.0", "17.58.63.12",
    )  # fmt: skip
    mailgun_apple, mailgun_generic, mailgun_barracuda, *_ = read["mailgun.jsonl"]
    assert mailgun_apple.provider_machine and mailgun_generic.provider_machine
    assert not mailgun_barracuda.provider_machine and "Barracuda" in (
        mailgun_barracuda.user_agent or ""
    )
    postmark_mpp = read["postmark.json"][0]
    assert (postmark_mpp.user_agent, postmark_mpp.ip) == ("Mozilla/5.0", "17.57.144.20")


def test_user_agents_and_addresses_are_never_shown_stored_or_keyed():
    opened = event(user_agent="Mozilla/5.0 secret-agent", ip="198.51.100.4", provider_machine=True)
    plain = event()
    assert "secret-agent" not in repr(opened) and "198.51.100.4" not in repr(opened)
    assert "198.51.100.4" not in str(opened.model_dump()) and not opened.event_metadata().keys() - {
        "source", "provider"
    }  # fmt: skip
    assert opened.dedupe_key() == plain.dedupe_key()


def test_a_runs_summary_counts_machines_by_rule_across_chunks():
    run, chunk = IngestReport(), IngestReport()
    run.machine["apple-mpp"] = 2
    chunk.machine.update({"apple-mpp": 1, "all-links-same-second": 3})
    run.merge(chunk)
    summary = run.summary_markdown(dry_run=False)
    assert "## Opens and clicks taken for a machine's, by rule" in summary
    assert "- all-links-same-second: 3\n- apple-mpp: 3\n" in summary
    assert "machine" not in IngestReport().summary_markdown(dry_run=False)


@pytest.mark.parametrize(
    ("bot", "flagged"),
    [("apple", True), ("generic", True), ("", False), (None, False), (True, True)],
)
def test_mailguns_bot_field_flags_any_bot_it_names(bot, flagged):
    record = {
        "event": "opened",
        "timestamp": 1741082405.1,
        "recipient": "lee@contoso.example",
        "client-info": {"user-agent": "Mozilla/5.0", "bot": bot},
    }
    opened = parse_record(record, EventFormat.mailgun, source="test", line=1)
    assert isinstance(opened, NormalisedEvent) and opened.provider_machine is flagged


def test_a_flag_that_is_not_true_or_false_names_its_field():
    record = {
        "event": "open",
        "sg_event_id": "x1",
        "timestamp": 1741078804,
        "email": "sam@northwind.io",
        "sg_machine_open": "yes",
    }
    refused = parse_record(record, EventFormat.sendgrid, source="test", line=4)
    assert refused == Malformed(source="test", line=4, reason="sg_machine_open: not true or false")
