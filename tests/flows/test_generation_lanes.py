"""`process-campaign-sends` generating in more than one process: every lead once, the run's LLM
concurrency never exceeded, a run that dies takes its lanes with it."""

import asyncio
import time
from uuid import UUID

import pytest
from sqlalchemy import func, select

import flows.process_campaign_sends as flows_module
from db.models import CampaignLead, EmailSend
from flows.process_campaign_sends import process_campaign_sends
from tasks import generation_lanes
from tasks.generation_lanes import PARENT_CHECK_SECONDS
from tests.fault.test_generation_crashes import counts, received_answers
from tests.flows.test_generation_faults import ALWAYS_OPEN
from tests.flows.test_process_campaign_sends import AS_OF, seed
from tests.support.fake_openai import FakeOpenAI
from tests.support.killed_worker import run_killed_worker
from tests.support.run_records import run_log_messages, run_with_artifacts

pytestmark = pytest.mark.flows

LEASE_SECONDS = 2


def lane_claims(messages: list[str]) -> dict[int, int]:
    found = {}
    for message in messages:
        if message.startswith("lane ") and " claimed " in message:
            words = message.split()
            found[int(words[1])] = int(words[3])
    return found


def run_in_two_lanes(
    run_settings, server: FakeOpenAI, *, when_busy: float, batch_size: int
) -> tuple[dict, UUID]:
    """A run allowed two processes and 8 LLM slots; its counts and its flow run's id."""
    run_settings.update(
        openai_api_key="sk-test-not-real",
        openai_base_url=server.base_url,
        llm_max_concurrency=8,
        generation_processes=2,
        generation_processes_when_busy=when_busy,
    )
    counts, _, run_id = asyncio.run(
        run_with_artifacts(process_campaign_sends, as_of=AS_OF, batch_size=batch_size)
    )
    return counts, run_id


def test_a_run_with_many_leads_due_generates_them_in_two_processes_each_once(
    run_settings, sessions
):
    campaign_id = seed(sessions, 1_200)
    with FakeOpenAI(latency_ms=150) as server:
        # The fake LLM is too slow to keep a core busy: the lanes start at once.
        counts, run_id = run_in_two_lanes(run_settings, server, when_busy=0, batch_size=100)
        stats = server.stats()
    assert counts[campaign_id].claimed == 1_200
    assert counts[campaign_id].scheduled == 1_200
    # Every lead was paid for once, and the two processes together kept to the run's 8 slots.
    assert stats.requests == 1_200
    assert stats.peak_in_flight <= 8
    with sessions() as session:
        per_lead = session.execute(
            select(EmailSend.leadId, func.count()).group_by(EmailSend.leadId)
        ).all()
        steps = {c.currentStepOrder for c in session.scalars(select(CampaignLead))}
    assert len(per_lead) == 1_200 and {n for _, n in per_lead} == {1}
    assert steps == {2}
    claims = lane_claims(asyncio.run(run_log_messages(run_id)))
    assert set(claims) == {1, 2} and sum(claims.values()) == 1_200
    assert claims[2] > 0, "the second process generated nothing"


def test_a_process_busy_only_once_most_leads_are_claimed_starts_no_other_lane(
    run_settings, sessions, monkeypatch
):
    monkeypatch.setattr(generation_lanes, "BUSY_WINDOW_SECONDS", 0.2)
    campaign_id = seed(sessions, 1_200)
    with FakeOpenAI(latency_ms=20) as server:
        # Busy at the first look, with three batches of 300 in flight: 300 left to claim.
        counts, run_id = run_in_two_lanes(run_settings, server, when_busy=0.0001, batch_size=300)
    assert counts[campaign_id].scheduled == 1_200
    messages = asyncio.run(run_log_messages(run_id))
    assert any("leads left to claim: one lane" in m for m in messages), messages
    assert lane_claims(messages) == {}


LANE_LEADS = 1_200


def sends_and_claims(sessions) -> tuple[int, int]:
    sends, _, claimed = counts(sessions)
    return sends, claimed


@pytest.mark.fault
@pytest.mark.slow
def test_kill_9_of_the_run_takes_its_lanes_with_it_and_a_rerun_sends_each_lead_once(
    worker_env, sessions, tmp_path
):
    # RELIABILITY.md properties 3 and 4 with two processes: the run is killed the moment its
    # second lane may call the LLM; that lane must stop too (nothing claims, writes or pays
    # after the kill), and the next run finishes every lead once, paying only for answers
    # nobody received.
    seed(sessions, LANE_LEADS, rules=ALWAYS_OPEN)
    with FakeOpenAI(latency_ms=100) as server:
        settings = {
            "OPENAI_API_KEY": "sk-test-not-real",
            "OPENAI_BASE_URL": server.base_url,
            "LLM_MAX_CONCURRENCY": "8",
            "GENERATION_PROCESSES": "2",
            "GENERATION_PROCESSES_WHEN_BUSY": "0",
            "CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        }
        run_killed_worker(
            "tests.support.run_flow",
            [AS_OF.isoformat(), "100"],
            "generation.lanes_started",
            settings,
        )
        time.sleep(2 * PARENT_CHECK_SECONDS + 0.5)  # the lane notices its parent is gone
        after_kill = (server.stats().requests, *sends_and_claims(sessions))
        time.sleep(LEASE_SECONDS + 0.5)  # long enough for a surviving lane to show itself
        assert (server.stats().requests, *sends_and_claims(sessions)) == after_kill
        received = received_answers(tmp_path / "results")
        # The rerun keeps the default lease: longer than a batch takes, as in production.
        for name, value in settings.items():
            if name not in ("PREFECT_LOCAL_STORAGE_PATH", "CLAIM_LEASE_SECONDS"):
                worker_env.setenv(name, value)
        asyncio.run(process_campaign_sends(as_of=AS_OF, batch_size=100))
        rerun_requests = server.stats().requests - after_kill[0]

    with sessions() as session:
        per_lead = session.execute(
            select(EmailSend.leadId, func.count()).group_by(EmailSend.leadId)
        ).all()
        leads = session.scalars(select(CampaignLead)).all()
    assert len(per_lead) == LANE_LEADS and {n for _, n in per_lead} == {1}
    assert {(c.currentStepOrder, c.claimToken) for c in leads} == {(2, None)}
    assert 0 < received < LANE_LEADS
    assert rerun_requests == LANE_LEADS - received


def test_when_the_first_lane_fails_the_others_stop_claiming_and_the_run_fails(
    run_settings, sessions, monkeypatch
):
    seed(sessions, LANE_LEADS)

    async def broken_lane(*args, **kwargs):
        raise RuntimeError("the first lane broke")

    # Only the flow's own lane: the other lane's task carries its own copy of the function.
    monkeypatch.setattr(flows_module, "generate_due_leads", broken_lane)
    with FakeOpenAI(latency_ms=20) as server:
        run_settings.update(
            openai_api_key="sk-test-not-real",
            openai_base_url=server.base_url,
            generation_processes=2,
            generation_processes_when_busy=0,  # the fake LLM is too slow to keep a core busy
        )
        with pytest.raises(RuntimeError, match="the first lane broke"):
            asyncio.run(process_campaign_sends(as_of=AS_OF, batch_size=100))
    sends, claimed = sends_and_claims(sessions)
    # Without the stop the second lane would have gone on to generate all 1,200 leads.
    assert sends == 0 and claimed == 0
