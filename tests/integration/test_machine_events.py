"""Machine opens and clicks on real PostgreSQL: provider exports classified as their manifest
says, whatever order and chunks they arrive in, a sweep split across chunks in flight, and the
report's human counts with the machines' beside them."""

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.analytics.campaign_report import (
    ReportWindow,
    compute_campaign_report,
    summary_markdown,
)
from core.engagement.event_files import read_event_file
from core.engagement.events import NormalisedEvent
from core.statuses import EngagementType
from db.base import utcnow
from db.models import Campaign, EngagementEvent, Workspace
from db.queries.engagement import ingest_events
from db.queries.report import read_report_inputs
from tests import factories

MACHINE = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "machine"
MANIFEST = json.loads((MACHINE / "expected.json").read_text())


def seed_sends(sessions) -> None:
    """The three sends the exports are about, sent when the manifest says."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws)
        for name, send in MANIFEST["sends"].items():
            lead = factories.lead(session, ws, email=f"{Path(name).stem}@lead.example")
            factories.enrolment(session, camp, lead)
            sent_at = datetime.fromisoformat(send["sentAt"])
            factories.scheduled_send(
                session, camp, lead, id=send["sendId"], status="sent", sentAt=sent_at,
                attemptedAt=sent_at, scheduled_for=sent_at,
            )  # fmt: skip


def exported_events() -> dict[tuple[str, int | None], NormalisedEvent]:
    """Every stored kind of event in the exports, by (file, line)."""
    found = {}
    for name in MANIFEST["sends"]:
        for record in read_event_file(MACHINE / name):
            assert not hasattr(record, "reason") or "is not stored" in record.reason, record
            if isinstance(record, NormalisedEvent):
                found[(name, record.line)] = record
    return found


def ingest(sessions, events):
    with sessions.begin() as session:
        return ingest_events(session, events, now=utcnow(), soft_bounce_limit=3)


def stored(sessions) -> dict[str, tuple[bool, str | None]]:
    with sessions() as session:
        rows = session.execute(
            select(
                EngagementEvent.dedupeKey, EngagementEvent.isMachine, EngagementEvent.machineReason
            )
        )
        return {key: (is_machine, reason) for key, is_machine, reason in rows}


def expected(events) -> dict[str, tuple[bool, str | None]]:
    return {
        events[(row["file"], row["line"])].dedupe_key(): (row["isMachine"], row["machineReason"])
        for row in MANIFEST["events"]
    }


def test_provider_exports_are_classified_as_the_manifest_says_in_any_order(sessions):
    seed_sends(sessions)
    events = exported_events()
    # Newest first, one chunk per event: each burst click arrives after the others committed,
    # and the too-soon click after everything else of its email.
    for event in sorted(events.values(), key=lambda e: e.occurred_at, reverse=True):
        ingest(sessions, [event])
    assert stored(sessions) == expected(events)

    again = ingest(sessions, list(events.values()))
    assert {outcome for (_, _, outcome) in again.outcomes} == {"duplicate"}
    assert not again.machine
    assert stored(sessions) == expected(events)


def test_provider_exports_in_one_chunk_match_the_manifest(sessions):
    seed_sends(sessions)
    events = exported_events()
    result = ingest(sessions, list(events.values()))
    assert stored(sessions) == expected(events)
    assert result.machine == Counter(
        row["machineReason"] for row in MANIFEST["events"] if row["isMachine"]
    )


def test_machine_sweep_split_across_concurrent_chunks_marks_both_clicks(sessions):
    seed_sends(sessions)
    send = MANIFEST["sends"]["postmark.json"]
    swept = datetime.fromisoformat(send["sentAt"]) + timedelta(minutes=5)

    def click(url: str, offset_ms: int) -> NormalisedEvent:
        return NormalisedEvent(
            type=EngagementType.click,
            occurred_at=swept + timedelta(milliseconds=offset_ms),
            provider="generic",
            source="test",
            send_id=send["sendId"],
            url=url,
        )

    first = sessions()
    first.begin()
    ingest_events(first, [click("https://a.example/1", 0)], now=utcnow(), soft_bounce_limit=3)
    # The second chunk's classification waits for the first to commit, then sees its click.
    second = threading.Thread(target=ingest, args=(sessions, [click("https://a.example/2", 400)]))
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive()
    first.commit()
    first.close()
    second.join(timeout=10)
    assert not second.is_alive()
    assert sorted(stored(sessions).values()) == [(True, "all-links-same-second")] * 2


def test_the_report_counts_people_and_puts_machines_beside_them(sessions):
    seed_sends(sessions)
    ingest(sessions, list(exported_events().values()))
    # A fourth email, opened and clicked by machines only: Apple's prefetch and a link scanner.
    sent_at = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
    with sessions.begin() as session:
        camp = session.scalars(select(Campaign)).one()
        lead = factories.lead(session, session.get_one(Workspace, camp.workspaceId))
        factories.enrolment(session, camp, lead)
        machines_only = factories.scheduled_send(
            session, camp, lead, status="sent", sentAt=sent_at, attemptedAt=sent_at
        )
    ingest(
        sessions,
        [
            NormalisedEvent(
                type=kind,
                occurred_at=sent_at + timedelta(seconds=3),
                provider="generic",
                source="test",
                send_id=machines_only.id,
                user_agent="Mozilla/5.0",
                url="https://acme-sales.com/pricing",
            )
            for kind in (EngagementType.open, EngagementType.click)
        ],
    )
    window = ReportWindow(
        since=datetime(2025, 3, 1, tzinfo=UTC), until=datetime(2025, 4, 1, tzinfo=UTC)
    )
    with sessions() as session:
        report = compute_campaign_report(read_report_inputs(session, window), window)
    (row,) = report.table("campaign")
    # Each of the three exports' emails was opened and clicked by a person as well as machines.
    assert (row["sent"], row["unique_opens"], row["unique_clicks"]) == (4, 3, 3)
    assert (row["machine_opens"], row["machine_clicks"]) == (1, 1)
    assert row["open_rate"] == row["click_rate"] == 0.75
    assert "opened by machines only 1, clicked by machines only 1" in summary_markdown(report)
