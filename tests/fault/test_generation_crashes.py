"""kill -9 of a real worker process at each generation crash point, then a re-run.

RELIABILITY.md property 3 (generation side) and 4: after the lease runs out the next run
finishes the work; every due lead ends with exactly one EmailSend for its step, none is lost or
stuck, and LLM work finished before the crash is not paid for again.
"""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from sqlalchemy import func, select, text

from db.models import CampaignLead, EmailSend, GeneratedMessage
from flows.process_campaign_sends import process_campaign_sends
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.killed_worker import run_killed_worker

pytestmark = [pytest.mark.fault, pytest.mark.flows]

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
LEADS, BATCH, LEASE_SECONDS = 40, 15, 2
# Batches generate concurrently, so the first to finish may be the short last one (10 leads).
SMALLEST_BATCH = LEADS % BATCH or BATCH


def seed(sessions) -> None:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(
            session,
            ws,
            steps=3,
            sendingRules={
                "timezone": "UTC",
                "window": {
                    "start": "00:00",
                    "end": "23:59",
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                },
            },
        )
        for i in range(LEADS):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, due=AS_OF - timedelta(minutes=5))


def counts(sessions) -> tuple[int, int, int]:
    with sessions() as session:
        sends = session.scalar(select(func.count()).select_from(EmailSend))
        messages = session.scalar(select(func.count()).select_from(GeneratedMessage))
        claimed = session.scalar(select(func.count()).where(CampaignLead.claimToken.is_not(None)))
    return sends, messages, claimed


def received_answers(results: Path) -> int:
    """Answers a dead worker persisted whole. One it was writing at the kill is torn: Prefect's
    result store reads it as missing, and a re-run pays for it again."""
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(results)))
    return sum(store.exists(path.name) for path in results.glob("generation-*"))


def inserted_sends(sessions, timeout: float = 10.0) -> int:
    """EmailSend rows ever inserted, committed or not: the statistics count aborted inserts too.

    A killed worker's backend reports its counters when it exits, a moment after the kill.
    """
    query = text("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'EmailSend'")
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:  # a new transaction: a fresh statistics snapshot
            inserted = session.scalar(query) or 0
        if inserted or time.monotonic() > deadline:
            return inserted
        time.sleep(0.1)


@pytest.mark.parametrize(
    "point",
    [
        "generation.after_claim",
        "generation.before_write",
        # Inside the write's transaction, after the EmailSend INSERT, before the commit: the
        # transaction dies with the process and rolls back, so nothing of the batch is written.
        "generation.after_insert",
        "generation.after_write",
    ],
)
def test_kill_9_then_rerun_leaves_one_send_per_lead(worker_env, sessions, tmp_path, point):
    seed(sessions)
    with FakeOpenAI() as server:
        settings = {
            "OPENAI_API_KEY": "sk-test-not-real",
            "OPENAI_BASE_URL": server.base_url,
            "CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        }
        args = [AS_OF.isoformat(), str(BATCH)]
        run_killed_worker("tests.support.run_flow", args, point, settings)
        sends, messages, claimed = counts(sessions)
        if point == "generation.after_write":
            assert sends == messages >= SMALLEST_BATCH and claimed <= LEADS - sends
        else:
            # Nothing written (after_insert: the uncommitted batch rolled back with the process).
            assert (sends, messages) == (0, 0) and claimed >= SMALLEST_BATCH
        if point == "generation.after_insert":
            # The INSERT did run: the kill landed inside the transaction, not before it.
            assert inserted_sends(sessions) >= SMALLEST_BATCH

        # What the dead worker received is persisted; requests in flight at the kill are lost.
        received = received_answers(tmp_path / "results")
        requests_before = server.stats().requests
        time.sleep(LEASE_SECONDS + 0.5)  # the dead worker's lease runs out
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CLAIM_LEASE_SECONDS"):
            worker_env.setenv(name, settings[name])
        asyncio.run(process_campaign_sends(as_of=AS_OF, batch_size=BATCH))
        rerun_requests = server.stats().requests - requests_before

    with sessions() as session:
        per_lead = session.execute(
            select(EmailSend.leadId, func.count()).group_by(EmailSend.leadId)
        ).all()
        leads = session.scalars(select(CampaignLead)).all()
    assert len(per_lead) == LEADS and {n for _, n in per_lead} == {1}
    assert {(c.currentStepOrder, c.claimToken, c.status) for c in leads} == {(2, None, "active")}
    # The re-run asked the LLM only for leads whose answer the dead worker never received.
    assert rerun_requests == LEADS - received
    if point == "generation.after_claim":
        assert received == 0
    else:
        assert received >= SMALLEST_BATCH
