"""Machine opens and clicks on real PostgreSQL: provider exports classified as their manifest
says, whatever order and chunks they arrive in, a sweep split across chunks in flight, the SQL
timing pass agreeing with the domain's rules on random clicks, and the report's human counts
with the machines' beside them."""

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.analytics.campaign_report import (
    ReportWindow,
    compute_campaign_report,
    summary_markdown,
)
from core.engagement.event_files import read_event_file
from core.engagement.events import NormalisedEvent
from core.engagement.machine import MachineRules, classify_engagement
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


class Drawn(NamedTuple):
    """One random engagement: which of the two sends, what, when after SENT, which link,
    whether the provider flagged it, and the chunk (0 to 3) it arrives in."""

    send: int
    kind: EngagementType
    after: timedelta
    url: str | None
    flagged: bool = False
    chunk: int = 0


SENT = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
# Send 0 has its sentAt, send 1 only its attempt a second later (COALESCE).
DELIVERED = (SENT, SENT + timedelta(seconds=1))
# Offsets on a quarter-second grid meet the thresholds exactly (a click at the window's end, two
# clicks a burst apart); any millisecond finds what lies between. Stored times keep
# milliseconds, so the domain's rules and the statement see the same instants.
QUARTERS = st.integers(-4, 12).map(lambda quarters: timedelta(milliseconds=250 * quarters))
MILLISECONDS = st.integers(-3_000, 15_000).map(lambda ms: timedelta(milliseconds=ms))
LINKS = [None, "https://a.example/1", "https://a.example/2"]
DRAWN = st.builds(
    Drawn,
    send=st.sampled_from([0, 1]),
    kind=st.sampled_from([EngagementType.click] * 3 + [EngagementType.open]),
    after=st.one_of(QUARTERS, QUARTERS, MILLISECONDS),
    url=st.sampled_from(LINKS),
    flagged=st.sampled_from([False, False, False, True]),
    chunk=st.integers(0, 3),
)
SECONDS = st.sampled_from([0, 0.25, 1, 2.5, 10])
CLICK = EngagementType.click
A, B = LINKS[1:]


def test_the_sql_timing_pass_agrees_with_the_domains_rules_on_random_clicks(sessions):
    """core.engagement.machine defines the rules; the timing pass applies them in SQL. On random
    clicks and opens of two sends, in random chunks arriving in random order, every stored
    verdict is what classify_engagement says of the event with all of its email's events."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws)
        send_ids = []
        for n, fields in enumerate([{"sentAt": DELIVERED[0]}, {"attemptedAt": DELIVERED[1]}]):
            lead = factories.lead(session, ws, email=f"timing{n}@lead.example")
            factories.enrolment(session, camp, lead)
            send_ids.append(
                factories.scheduled_send(session, camp, lead, status="sent", **fields).id
            )

    @settings(max_examples=150, deadline=None)
    @given(
        drawn=st.lists(DRAWN, max_size=14),
        window=SECONDS,
        burst=SECONDS,
        order=st.permutations(range(4)),
    )
    # The edges, every run: exactly a burst apart, and an open beside a click (no sweep); at the
    # window's end and in a burst (the burst's reason); a missing link against a missing link
    # and against a link; a flagged click keeping its reason and still sweeping with another;
    # send 1's attempt as its time; the burst rule off; two emails' clicks at one moment.
    @example(
        [
            Drawn(0, CLICK, timedelta(seconds=3), A),
            Drawn(0, CLICK, timedelta(seconds=4), B),
            Drawn(0, EngagementType.open, timedelta(seconds=6), None),
            Drawn(0, CLICK, timedelta(seconds=6), A),
        ],
        0,
        1,
        [0, 1, 2, 3],
    )
    @example(
        [
            Drawn(0, CLICK, timedelta(seconds=1), A, chunk=1),
            Drawn(0, CLICK, timedelta(seconds=1.5), B),
        ],
        1,
        1,
        [0, 1, 2, 3],
    )
    @example(
        [
            Drawn(0, CLICK, timedelta(seconds=2), None),
            Drawn(0, CLICK, timedelta(seconds=2), None),
            Drawn(1, CLICK, timedelta(seconds=5), None),
            Drawn(1, CLICK, timedelta(seconds=5), A, chunk=2),
        ],
        0,
        1,
        [3, 2, 1, 0],
    )
    @example(
        [
            Drawn(0, CLICK, timedelta(seconds=3), A, flagged=True),
            Drawn(0, CLICK, timedelta(seconds=3.5), B, chunk=1),
        ],
        1,
        1,
        [1, 0, 2, 3],
    )
    @example(
        [Drawn(1, CLICK, timedelta(seconds=1.5), A), Drawn(1, CLICK, timedelta(seconds=2), A)],
        1,
        1,
        [0, 1, 2, 3],
    )
    @example(
        [Drawn(0, CLICK, timedelta(seconds=2), A), Drawn(0, CLICK, timedelta(seconds=2), B)],
        0,
        0,
        [0, 1, 2, 3],
    )
    @example(
        [Drawn(0, CLICK, timedelta(seconds=5), A), Drawn(1, CLICK, timedelta(seconds=5), B)],
        0,
        1,
        [0, 1, 2, 3],
    )
    def agrees(drawn: list[Drawn], window: float, burst: float, order: list[int]) -> None:
        rules = MachineRules(click_window=timedelta(seconds=window), burst=timedelta(seconds=burst))
        events = [
            NormalisedEvent(
                type=d.kind,
                occurred_at=SENT + d.after,
                provider="generic",
                source="property",
                provider_event_id=f"e{n}",
                send_id=send_ids[d.send],
                url=d.url,
                provider_machine=d.flagged,
            )
            for n, d in enumerate(drawn)
        ]
        session = sessions()
        try:
            for chunk in order:
                arriving = [e for e, d in zip(events, drawn, strict=True) if d.chunk == chunk]
                ingest_events(
                    session, arriving, now=utcnow(), soft_bounce_limit=3, machine_rules=rules
                )
            columns = (
                EngagementEvent.dedupeKey,
                EngagementEvent.isMachine,
                EngagementEvent.machineReason,
            )
            got = {
                key: (is_machine, reason)
                for key, is_machine, reason in session.execute(select(*columns))
            }
        finally:
            session.rollback()
            session.close()
        want = {}
        for event, d in zip(events, drawn, strict=True):
            email = [e for e, other in zip(events, drawn, strict=True) if other.send == d.send]
            verdict = classify_engagement(
                event, delivered_at=DELIVERED[d.send], sibling_clicks=email, rules=rules
            )
            want[event.dedupe_key()] = (verdict.is_machine, verdict.reason)
        assert got == want

    agrees()


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
