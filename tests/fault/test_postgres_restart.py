"""PostgreSQL goes away mid-run: a real worker process, a real server stopped and started again.

The server is a throwaway cluster of this module's own (never the shared test server). The
worker either recovers (the tasks' retries and the pool's pre-ping reconnect) or fails with a
clear error in its Prefect state; either way nothing is half written, and the next run (once
the leases are out) finishes the work: one EmailSend per lead, at most one message per send.
"""

import asyncio
import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.engine import make_engine, make_session_factory, upgrade
from db.models import CampaignLead, EmailSend, GeneratedMessage
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.run_records import run_log_messages
from tests.support.smtp_server import LoopbackSMTP
from tests.support.throwaway_postgres import ThrowawayPostgres

pytestmark = [pytest.mark.fault, pytest.mark.flows, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
# Long enough that the server goes away while the run is busy; every database call the run
# makes in that time fails (connection refused), so its retries are what is under test.
OUTAGE_SECONDS = 3
WORKER_TIMEOUT = 180
ALL_DAY = {
    "start": "00:00",
    "end": "23:59:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}
# What psycopg says when the server is stopped under a session, or refuses connections.
DATABASE_GONE = re.compile(
    r"terminating connection|server closed the connection|connection refused|"
    r"connection failed|shutting down|consuming input failed",
    re.IGNORECASE,
)
_names = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def database(postgres) -> Iterator[tuple[str, sessionmaker[Session]]]:
    """A migrated database on the throwaway server, and sessions on it (pre-ping: they survive
    the restart)."""
    url = postgres.create_database(f"restart_{next(_names)}")
    upgrade(url)
    engine = make_engine(url)
    yield url, make_session_factory(engine)
    engine.dispose()


def outage(postgres: ThrowawayPostgres) -> None:
    """Stop the server (fast: sessions are terminated mid-transaction), wait, start it again."""
    postgres.stop_server()
    time.sleep(OUTAGE_SECONDS)
    postgres.start_server()


def start_worker(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would block the worker
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(worker: subprocess.Popen, log: Path) -> str:
    """Wait for a worker (killed, by its pid, if it hangs); its output."""
    try:
        worker.wait(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail(f"worker hung after the restart:\n{log.read_text()[-3000:]}")
    return log.read_text()


def wait_until(condition, worker: subprocess.Popen, log: Path, what: str) -> None:
    """Poll until the run got this far; fail (killing it, by its pid) if it never does."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not condition():
        if worker.poll() is not None or time.monotonic() > deadline:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            pytest.fail(f"the run ended before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def flow_run(output: str) -> tuple[str, str | None, list[str]]:
    """The run's final state type and message, and its log messages, from the Prefect API."""
    found = re.search(r"/runs/flow-run/([0-9a-f-]{36})", output)
    assert found, output[-3000:]
    run_id = UUID(found.group(1))

    async def read() -> tuple[str, str | None, list[str]]:
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
        assert run.state is not None
        return run.state.type.value, run.state.message, await run_log_messages(run_id)

    return asyncio.run(read())


def assert_clean_outcome(output: str) -> bool:
    """The run recovered, or failed saying the database went away; True when it recovered."""
    state, message, logs = flow_run(output)
    print(f"run during the outage: {state}: {message}")
    if state == "COMPLETED":
        return True
    assert state == "FAILED", (state, message)
    # The reason is the state's first line, in words: not buried in a traceback.
    assert message and DATABASE_GONE.search(message.splitlines()[0]), message
    assert any(DATABASE_GONE.search(line) for line in logs), logs[-5:]  # and in the run's log
    return False


def wait_for_leases(sessions, model) -> None:
    """Sleep until every lease the run left behind has run out."""
    with sessions() as session:
        until = session.scalar(select(func.max(model.claimedUntil)))
    if until is not None:
        time.sleep(max((until - utcnow()).total_seconds(), 0) + 0.5)


# -- generation ---------------------------------------------------------------------------

LEADS, BATCH, GEN_LEASE = 300, 25, 15


def seed_leads(sessions) -> None:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(
            session, ws, steps=3, sendingRules={"timezone": "UTC", "window": ALL_DAY}
        )
        for i in range(LEADS):
            lead = factories.lead(
                session, ws, email=f"lead{i}@buyer.example", companyName=f"Company {i}"
            )
            factories.enrolment(session, camp, lead, due=AS_OF - timedelta(minutes=5, seconds=i))


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def assert_no_partial_writes(sessions) -> int:
    """Whole batches only: each write transaction has the batch's messages, sends and
    progressions, or nothing; returns how many leads were written."""
    with sessions() as session:
        orphans = session.execute(
            text(
                """
                SELECT
                  (SELECT count(*) FROM "EmailSend" s
                    LEFT JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
                    WHERE gm.id IS NULL),
                  (SELECT count(*) FROM "GeneratedMessage" gm
                    WHERE NOT EXISTS (SELECT 1 FROM "EmailSend" s
                                      WHERE s."generatedMessageId" = gm.id)),
                  (SELECT count(*) FROM "CampaignLead" cl
                    WHERE cl."currentStepOrder" > 1 AND NOT EXISTS (
                        SELECT 1 FROM "EmailSend" s
                        WHERE s."campaignId" = cl."campaignId" AND s."leadId" = cl."leadId")),
                  (SELECT count(*) FROM "EmailSend" s
                    JOIN "CampaignLead" cl
                      ON cl."campaignId" = s."campaignId" AND cl."leadId" = s."leadId"
                    WHERE cl."currentStepOrder" = 1)
                """
            )
        ).one()
        # Rows written by one transaction share its xmin: one write per batch.
        batches = session.execute(
            text(
                """
                SELECT s.xmin::text, count(*),
                       (SELECT count(*) FROM "GeneratedMessage" gm WHERE gm.xmin = s.xmin),
                       (SELECT count(*) FROM "CampaignLead" cl WHERE cl.xmin = s.xmin)
                FROM "EmailSend" s GROUP BY s.xmin
                """
            )
        ).all()
    # No send without its message, no message without its send, no lead moved on without its
    # send, no send whose lead did not move on.
    assert tuple(orphans) == (0, 0, 0, 0), orphans
    sizes = sorted(n for _, n, _, _ in batches)
    assert all(n == messages == leads for _, n, messages, leads in batches), batches
    # Full batches, except the one that took the last leads.
    assert all(n == BATCH for n in sizes[1:]) and sizes[:1] <= [BATCH], sizes
    return sum(sizes)


def test_generation_survives_postgres_going_away(prefect_harness, database, postgres, tmp_path):
    url, sessions = database
    seed_leads(sessions)
    with FakeOpenAI(latency_ms=100) as llm:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "OPENAI_API_KEY": "sk-test-not-real",
            "OPENAI_BASE_URL": llm.base_url,
            # 8 calls of 100 ms in flight: about 80 leads a second, so the run takes seconds.
            "LLM_MAX_CONCURRENCY": "8",
            "CLAIM_LEASE_SECONDS": str(GEN_LEASE),
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        }
        args = [AS_OF.isoformat(), str(BATCH)]
        log = tmp_path / "run-1.log"
        worker = start_worker("tests.support.run_flow", args, env, log)
        # Mid-run: a batch is written, most leads are not.
        wait_until(lambda: count(sessions, EmailSend) >= BATCH, worker, log, "the first write")
        outage(postgres)
        recovered = assert_clean_outcome(finish(worker, log))
        written = assert_no_partial_writes(sessions)
        requests_first_run = llm.stats().requests
        with sessions() as session:
            # A claim committed just before the server went, whose answer never arrived.
            lost_claims = session.scalar(
                select(func.count()).where(CampaignLead.claimToken.is_not(None))
            )

        wait_for_leases(sessions, CampaignLead)
        log = tmp_path / "run-2.log"
        second = finish(start_worker("tests.support.run_flow", args, env, log), log)
        assert flow_run(second)[0] == "COMPLETED", second[-3000:]
        requests = llm.stats().requests

    assert written >= BATCH, written
    if recovered:  # every lead it claimed was written (or its claim's answer was lost)
        assert written + lost_claims == LEADS, (written, lost_claims)
    assert_no_partial_writes(sessions)
    with sessions() as session:
        per_lead = session.execute(
            select(EmailSend.leadId, func.count()).group_by(EmailSend.leadId)
        ).all()
        state = (
            CampaignLead.currentStepOrder,
            CampaignLead.status,
            CampaignLead.claimToken,
            CampaignLead.attempts,
        )
        leads = session.execute(select(*state, func.count()).group_by(*state)).all()
        messages = session.scalar(select(func.count()).select_from(GeneratedMessage))
    assert len(per_lead) == LEADS and {n for _, n in per_lead} == {1}
    assert messages == LEADS
    assert leads == [(2, "active", None, 0, LEADS)]  # nobody stuck, held or failed
    if recovered:
        # The outage cost retries of database calls, never a second LLM call.
        assert requests_first_run == requests == LEADS
    else:
        # Only calls in flight when the run gave up are paid again.
        assert LEADS <= requests <= LEADS + 8


# -- delivery -----------------------------------------------------------------------------

SENDS, DELIVERY_LEASE = 2_000, 5
RULES = {
    "timezone": "UTC",
    "window": ALL_DAY,
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "dailyLimit": 10_000,
    "mailboxDailyLimit": 10_000,
    "fromEmail": "alex@seller.example",
}


def seed_sends(sessions) -> None:
    due = utcnow() - timedelta(minutes=1)
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, sendingRules=RULES)
        step = session.execute(
            text('SELECT id FROM "SequenceStep" WHERE "campaignId" = :c AND "stepOrder" = 1'),
            {"c": camp.id},
        ).scalar_one()
        params = {"ws": ws.id, "camp": camp.id, "step": step, "n": SENDS}
        params["due"] = due.replace(tzinfo=None)
        for statement in (
            """INSERT INTO "Lead" (id, "workspaceId", email, "firstName", "updatedAt")
               SELECT 'l' || g, :ws, 'lead' || g || '@buyer.example', 'Ada', now()
               FROM generate_series(1, :n) g""",
            """INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status,
                                           "currentStepOrder", "updatedAt")
               SELECT 'cl' || g, :camp, 'l' || g, 'active', 2, now()
               FROM generate_series(1, :n) g""",
            """INSERT INTO "GeneratedMessage" (id, "campaignId", "leadId", "stepId", subject,
                                               body)
               SELECT 'gm' || g, :camp, 'l' || g, :step, 'Quick question',
                      'Hi Ada,' || chr(10) || chr(10) || 'Worth a chat?'
               FROM generate_series(1, :n) g""",
            """INSERT INTO "EmailSend" (id, "campaignId", "leadId", "stepId",
                                        "generatedMessageId", "toEmail", status, "scheduledFor",
                                        "updatedAt")
               SELECT 's' || g, :camp, 'l' || g, :step, 'gm' || g,
                      'lead' || g || '@buyer.example', 'scheduled',
                      CAST(:due AS timestamp) - (:n - g) * interval '1 millisecond', now()
               FROM generate_series(1, :n) g""",
        ):
            session.execute(text(statement), params)


def delivered(smtp: LoopbackSMTP) -> dict[str, int]:
    """Messages the SMTP server took, per seeded recipient."""
    per_address = {f"lead{g}@buyer.example": 0 for g in range(1, SENDS + 1)}
    for message in smtp.messages:
        (recipient,) = message.rcpt_tos
        per_address[recipient] += 1
    return per_address


def sends(sessions) -> list[tuple[str, str, str | None, str | None]]:
    with sessions() as session:
        columns = (
            EmailSend.toEmail,
            EmailSend.status,
            EmailSend.statusReason,
            EmailSend.claimToken,
        )
        return [tuple(row) for row in session.execute(select(*columns))]


def test_delivery_survives_postgres_going_away(prefect_harness, database, postgres, tmp_path):
    url, sessions = database
    seed_sends(sessions)
    with LoopbackSMTP() as smtp:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "EMAIL_TRANSPORT": "smtp",
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "none",
            "UNSUBSCRIBE_SECRET": "fault-suite-secret-0123456789",
            "CLAIM_LEASE_SECONDS": str(DELIVERY_LEASE),
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        }
        log = tmp_path / "run-1.log"
        worker = start_worker("tests.support.run_delivery", ["500"], env, log)
        wait_until(lambda: len(smtp.messages) >= 200, worker, log, "200 messages")
        outage(postgres)
        output = finish(worker, log)
        recovered = assert_clean_outcome(output)
        # Before anything is rescued: no send got two messages, every send the database
        # says is sent got its one, and none still scheduled (so to be sent again) got any.
        first, in_flight = delivered(smtp), 0
        assert set(first.values()) <= {0, 1}
        for email, status, _, _ in sends(sessions):
            if status == "sent":
                assert first[email] == 1
            elif status == "scheduled":
                assert first[email] == 0
            else:  # handed over when the server went: it may or may not have left
                assert status == "sending", status
                in_flight += 1
        print(f"in flight: {in_flight}, of which delivered: ", end="")
        print(sum(first[e] for e, status, _, _ in sends(sessions) if status == "sending"))
        if not recovered:
            # Each lane wrote what it knew once the server was back: the results of the sends
            # the SMTP server had answered, and the release of its group not transmitted.
            assert "lane stopped on a database error; wrote" in output, output[-3000:]
            assert in_flight == 0

        wait_for_leases(sessions, EmailSend)
        log = tmp_path / "run-2.log"
        second = finish(start_worker("tests.support.run_delivery", ["500"], env, log), log)
        assert flow_run(second)[0] == "COMPLETED", second[-3000:]
        per_address = delivered(smtp)

    rows = sends(sessions)
    # Every send went out exactly once, and none was left for the operator as unknown: the
    # first run's lanes wrote their results, and what they released the second run sent.
    assert {status for _, status, _, _ in rows} == {"sent"}
    assert all(per_address[email] == 1 and token is None for email, _, _, token in rows)
    assert second.count("outcome unknown") == 0
