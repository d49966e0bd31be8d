"""`campaign-report` under the Prefect harness: the default window, artifacts, the output file."""

import asyncio
import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from core.analytics.campaign_report import COLUMNS, ReportOutputError
from db.base import utcnow
from db.models import EngagementEvent, GeneratedMessage
from flows.campaign_report import campaign_report
from tests import factories
from tests.support.run_records import run_log_messages, run_with_artifacts

pytestmark = pytest.mark.flows

BODY = "Hi Ada, SENTINEL-BODY about Buyercorp"


def seed(sessions) -> str:
    """Spring launch: Ada's step 1 left a day ago (opened twice, replied), Bob's waits; Carol's
    enrolment and email are 40 days old, outside the default 30-day window."""
    now = utcnow()
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, name="Spring launch")
        ada = factories.lead(session, ws, email="ada@buyer.example")
        bob = factories.lead(session, ws, email="bob@buyer.example")
        carol = factories.lead(session, ws, email="carol@buyer.example")
        for lead, age in ((ada, 2), (bob, 2), (carol, 40)):
            factories.enrolment(session, camp, lead, createdAt=now - timedelta(days=age))

        def send(lead, age, **fields):
            row = factories.scheduled_send(session, camp, lead, body=BODY, **fields)
            row.createdAt = now - timedelta(days=age)
            message = session.get(GeneratedMessage, row.generatedMessageId)
            message.createdAt = now - timedelta(days=age)
            message.promptTokens, message.completionTokens = 1000, 250
            message.costUsd = Decimal("0.0015")
            return row

        sent_at = now - timedelta(days=1)
        first = send(
            ada, 1, status="sent", scheduled_for=sent_at - timedelta(seconds=90), sentAt=sent_at
        )
        send(bob, 1, scheduled_for=now + timedelta(hours=1))
        old_at = now - timedelta(days=40)
        send(carol, 40, status="sent", scheduled_for=old_at, sentAt=old_at)
        session.flush()
        for n, kind in enumerate(("open", "open", "reply")):
            session.add(
                EngagementEvent(
                    emailSendId=first.id,
                    type=kind,
                    occurredAt=sent_at + timedelta(hours=n + 1),
                    dedupeKey=f"flow-test:{first.id}:{n}",
                )
            )
        return camp.id


async def run_report(**params):
    report, artifacts, run_id = await run_with_artifacts(campaign_report, **params)
    return report, artifacts, await run_log_messages(run_id)


def table(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_the_default_window_artifacts_and_csv(run_settings, sessions, tmp_path):
    campaign_id = seed(sessions)
    output = tmp_path / "reports" / "spring.csv"
    report, artifacts, logs = asyncio.run(run_report(output=str(output)))

    # The window ends at the run's scheduled start and begins 30 days before.
    assert report.window.until - report.window.since == timedelta(days=30)
    assert abs(report.window.until - utcnow()) < timedelta(minutes=5)

    keys = {"campaign-report-steps", "campaign-report-campaigns", "campaign-report-summary"}
    assert keys <= set(artifacts)
    (campaign,) = table(artifacts["campaign-report-campaigns"])
    assert campaign["campaign_id"] == campaign_id and campaign["step"] is None
    assert {k: campaign[k] for k in ("enrolled", "generated", "scheduled", "sent")} == {
        "enrolled": 2,
        "generated": 2,
        "scheduled": 2,
        "sent": 1,
    }
    assert (campaign["unique_opens"], campaign["replies"], campaign["open_rate"]) == (1, 1, 1.0)
    assert campaign["cost_usd_per_1000"] == 1.5 and campaign["prompt_tokens_per_1000"] == 1_000_000
    assert campaign["due_to_sent_p50_s"] == 90.0
    steps = table(artifacts["campaign-report-steps"])
    assert [(s["step"], s["sent"], s["scheduled"]) for s in steps] == [(1, 1, 2), (2, 0, 0)]
    summary = artifacts["campaign-report-summary"].data
    assert "# campaign-report" in summary and "Spring launch" in summary
    assert "p50 90 s" in summary

    stored = "\n".join([*logs, *(str(a.data) + str(a.description) for a in artifacts.values())])
    for secret in ("@buyer.example", "SENTINEL-BODY", "Buyercorp"):
        assert secret not in stored

    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["level"], r["step"]) for r in rows] == [
        ("step", "1"),
        ("step", "2"),
        ("campaign", ""),
    ]
    first, second, total = rows

    def pick(row, *names):
        return {name: row[name] for name in names}

    assert pick(first, "enrolled", "generated", "scheduled", "sent", "unique_opens") == {
        "enrolled": "",  # an enrolment belongs to the campaign row
        "generated": "2",
        "scheduled": "2",
        "sent": "1",
        "unique_opens": "1",
    }
    assert pick(first, "open_rate", "reply_rate", "click_rate", "prompt_tokens", "cost_usd") == {
        "open_rate": "1",
        "reply_rate": "1",
        "click_rate": "0",
        "prompt_tokens": "2000",
        "cost_usd": "0.003",
    }
    assert pick(first, "cost_usd_per_1000", "due_to_sent_p50_s", "due_to_sent_p95_s") == {
        "cost_usd_per_1000": "1.5",
        "due_to_sent_p50_s": "90",
        "due_to_sent_p95_s": "90",
    }
    assert pick(second, "generated", "sent", "open_rate", "cost_usd_per_1000") == {
        "generated": "0",
        "sent": "0",
        "open_rate": "",  # nothing sent: no rate
        "cost_usd_per_1000": "",
    }
    assert pick(total, "campaign_id", "campaign_name", "enrolled", "replies", "cost_usd") == {
        "campaign_id": campaign_id,
        "campaign_name": "Spring launch",
        "enrolled": "2",
        "replies": "1",
        "cost_usd": "0.003",
    }


def test_an_explicit_window_and_campaign(run_settings, sessions, tmp_path):
    campaign_id = seed(sessions)
    other = seed(sessions)
    now = utcnow()
    report = asyncio.run(
        campaign_report(
            campaign_id=campaign_id,
            since=now - timedelta(days=45),
            until=now - timedelta(days=35),
        )
    )
    (row,) = report.campaigns.to_dict("records")
    assert row["campaign_id"] == campaign_id != other
    assert (row["enrolled"], row["generated"], row["sent"]) == (1, 1, 1)  # only Carol's
    assert row["due_to_sent_p50_s"] == 0.0


def test_a_bad_suffix_fails_before_reading(run_settings, tmp_path):
    with pytest.raises(ReportOutputError, match=r"must end in \.csv or \.parquet, not '\.xlsx'"):
        asyncio.run(campaign_report(output=str(tmp_path / "report.xlsx")))
    assert not (tmp_path / "report.xlsx").exists()


def test_an_empty_window_is_a_report_of_nothing(run_settings, sessions):
    seed(sessions)
    now = utcnow()
    report = asyncio.run(campaign_report(since=now + timedelta(days=1), until=now + timedelta(2)))
    assert report.campaigns.empty and report.steps.empty


def test_since_after_until_is_refused(run_settings):
    now = utcnow()
    with pytest.raises(ValueError, match="must be before until"):
        asyncio.run(campaign_report(since=now, until=now - timedelta(days=1)))


def test_parquet_output_holds_every_row(run_settings, sessions, tmp_path):
    seed(sessions)
    output = tmp_path / "report.parquet"
    report = asyncio.run(campaign_report(output=str(output)))
    frame = pd.read_parquet(output)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == len(report.steps) + len(report.campaigns)


def seed_mailboxes(sessions, since) -> str:
    """Over three UTC days from `since`: Alex sends three on day 1 (a hard bounce, a soft bounce
    opened later, one opened and replied to), nothing on day 2 and one refused on day 3; Bob
    sends two on day 2 (one complaint). Another campaign's send from Alex must not count."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=1, name="Deliverability")
        other = factories.campaign(session, ws, steps=1, name="Other")

        def send(campaign, mailbox, day, hour, status="sent", *events):
            lead = factories.lead(session, ws)
            at = since + timedelta(days=day, hours=hour)
            accepted = {"sentAt": at} if status == "sent" else {}
            row = factories.scheduled_send(
                session,
                campaign,
                lead,
                status=status,
                mailbox=mailbox,
                scheduled_for=at,
                attemptedAt=at,
                **accepted,
            )
            session.flush()
            for n, (kind, metadata) in enumerate(events):
                session.add(
                    EngagementEvent(
                        emailSendId=row.id,
                        type=kind,
                        occurredAt=at + timedelta(hours=n + 1),
                        eventMetadata=metadata,
                        dedupeKey=f"mailbox-days:{row.id}:{n}",
                    )
                )

        alex, bob = "alex@seller.example", "Bob@Seller.example"
        send(camp, alex, 0, 9, "failed", ("bounce", {"bounceKind": "hard"}))  # refused at handover
        send(camp, alex, 0, 10, "sent", ("bounce", {"bounceKind": "soft"}), ("open", None))
        send(camp, alex, 0, 11, "sent", ("open", None), ("reply", None))
        send(camp, alex, 2, 9, "failed")  # out of retries: failed, not sent
        send(camp, bob, 1, 9, "sent", ("complaint", None))
        send(camp, bob, 1, 23, "sent")
        send(other, alex, 1, 9, "sent")
        return camp.id


def deliverability_report(sessions, output):
    """`seed_mailboxes`' campaign over its three days, written to output: (artifacts, logs)."""
    since = datetime(2026, 2, 1, tzinfo=UTC)
    campaign_id = seed_mailboxes(sessions, since)
    _, artifacts, logs = asyncio.run(
        run_report(
            campaign_id=campaign_id,
            since=since,
            until=since + timedelta(days=3),
            output=str(output),
        )
    )
    return artifacts, logs


def test_per_mailbox_per_day_rates_in_an_artifact_and_beside_the_file(
    run_settings, sessions, tmp_path
):
    artifacts, logs = deliverability_report(sessions, tmp_path / "deliverability.csv")
    rows = table(artifacts["campaign-report-mailbox-days"])
    days = {(r["mailbox"], r["day"]): r for r in rows}
    assert list(days) == [
        ("alex@seller.example", "2026-02-01"),
        ("alex@seller.example", "2026-02-02"),
        ("alex@seller.example", "2026-02-03"),
        ("bob@seller.example", "2026-02-01"),
        ("bob@seller.example", "2026-02-02"),
        ("bob@seller.example", "2026-02-03"),
    ]
    counts = ("sent", "failed", "hard_bounces", "soft_bounces", "complaints", "replies")
    rates = ("hard_bounce_rate", "soft_bounce_rate", "complaint_rate", "reply_rate", "open_rate")

    def pick(row, names):
        return tuple(row[name] for name in names)

    # The hard bounce refused at handover proves the send left: three sent on day 1.
    first = days[("alex@seller.example", "2026-02-01")]
    assert pick(first, counts) == (3, 0, 1, 1, 0, 1)
    assert first["unique_opens"] == 2
    assert pick(first, rates) == (0.333333, 0.333333, 0.0, 0.333333, 0.666667)
    # A day with nothing sent, and one with only a failure: counts, and no rate.
    for quiet in ("2026-02-02", "2026-02-03"):
        assert days[("alex@seller.example", quiet)]["sent"] == 0
        assert pick(days[("alex@seller.example", quiet)], rates) == (None,) * 5
    assert days[("alex@seller.example", "2026-02-03")]["failed"] == 1
    bob = days[("bob@seller.example", "2026-02-02")]
    assert pick(bob, counts) == (2, 0, 0, 0, 1, 0) and bob["complaint_rate"] == 0.5

    beside = tmp_path / "deliverability-mailbox-days.csv"
    with beside.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["mailbox"], r["day"], r["sent"]) for r in written] == [
        (mailbox, day, str(days[(mailbox, day)]["sent"])) for mailbox, day in days
    ]
    assert written[1]["hard_bounce_rate"] == "" and written[0]["open_rate"] == "0.6666666667"
    assert any(str(beside) in line for line in logs)
