"""Writing drafts ahead through the Batch API, against the fake server (real HTTP, real DB).

Submit, complete, gate, use at due time; a lead whose data changed is generated again and its
draft superseded; an expired batch and per-request errors fall back to the synchronous path; a
run killed between submission and its record submits no custom_id twice.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from core.analytics.campaign_report import ReportWindow, compute_campaign_report, summary_markdown
from db.models import (
    EmailSend,
    GeneratedMessage,
    GenerationBatch,
    GenerationBatchRequest,
    Lead,
    SequenceStep,
    SequenceStepVariant,
)
from db.queries.report import read_report_inputs
from flows.pregenerate_upcoming_steps import pregenerate_upcoming_steps
from flows.process_campaign_sends import process_campaign_sends
from tests import factories
from tests.flows.test_generation_faults import ALWAYS_OPEN
from tests.support.fake_openai import FakeOpenAI
from tests.support.killed_worker import run_killed_worker
from tests.support.openai_wire import default_responder
from tests.support.run_records import run_logs

pytestmark = pytest.mark.flows

AS_OF = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
DUE = AS_OF + timedelta(days=3)


def seed(sessions, n: int, *, due: datetime = DUE) -> list[str]:
    """A campaign with n leads due at `due`; their Lead ids."""
    return seed_dues(sessions, [due] * n)


def seed_dues(sessions, dues: list[datetime]) -> list[str]:
    """A campaign with a lead due at each of `dues`; their Lead ids."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=ALWAYS_OPEN)
        leads = []
        for i, due in enumerate(dues):
            lead = factories.lead(session, ws, email=f"lead{i}@buyer.example")
            factories.enrolment(session, camp, lead, due=due)
            leads.append(lead.id)
        return leads


def pregenerate(**params):
    return asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF, **params))


def send_due():
    return asyncio.run(process_campaign_sends(as_of=DUE + timedelta(minutes=1)))


def messages(sessions) -> list[tuple[str, str, str | None]]:
    """(leadId, status, pricing) of every GeneratedMessage, sorted."""
    with sessions() as session:
        rows = session.execute(
            select(GeneratedMessage.leadId, GeneratedMessage.status, GeneratedMessage.pricing)
        ).all()
    return sorted((lead, status, pricing) for lead, status, pricing in rows)


def sends_per_lead(sessions) -> dict[str, int]:
    with sessions() as session:
        return dict(
            session.execute(select(EmailSend.leadId, func.count()).group_by(EmailSend.leadId)).all()
        )


def chat_requests(server: FakeOpenAI) -> int:
    return server.stats().requests


def test_batch_round_trip_uses_the_drafts_and_regenerates_a_changed_lead(llm, sessions):
    leads = seed(sessions, 3)
    soon = seed(sessions, 1, due=AS_OF + timedelta(hours=12))  # too soon for a 24-hour batch
    seed(sessions, 1, due=AS_OF + timedelta(days=9))  # too far ahead

    submitted = pregenerate()
    assert (submitted.submitted_requests, submitted.submitted_batches) == (3, 1)
    read = pregenerate()  # the fake completes at once; this run reads it and submits nothing new
    assert (read.finished, read.drafted, read.submitted_requests) == (1, 3, 0)
    assert [m[1:] for m in messages(sessions)] == [("pregenerated", "batch")] * 3
    # Nothing pregenerated is ever delivered: no send exists yet.
    assert sends_per_lead(sessions) == {}

    # One lead's data changes after its draft was written: its content hash no longer matches.
    with sessions.begin() as session:
        session.execute(update(Lead).where(Lead.id == leads[2]).values(companyName="Globex"))
    before = chat_requests(llm)
    counts = send_due()
    # Only the changed lead (and the one due too soon to be written ahead) is generated now.
    assert chat_requests(llm) - before == 2
    assert sum(c.scheduled for c in counts.values()) == 4
    assert sends_per_lead(sessions) == {lead: 1 for lead in [*leads, *soon]}
    found = [m for m in messages(sessions) if m[0] in leads]
    assert sorted((status, pricing) for lead, status, pricing in found if lead != leads[2]) == [
        ("generated", "batch"),
        ("generated", "batch"),
    ]
    assert sorted((status, pricing) for lead, status, pricing in found if lead == leads[2]) == [
        ("generated", "standard"),
        ("superseded", "batch"),
    ]
    with sessions() as session:
        sent_bodies = session.scalars(
            select(GeneratedMessage.body)
            .join(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
            .where(EmailSend.leadId == leads[2])
        ).all()
    assert len(sent_bodies) == 1 and "Globex" in sent_bodies[0]


def test_a_draft_written_ahead_keeps_its_leads_variant_through_to_the_send(llm, sessions):
    seed(sessions, 6)
    with sessions.begin() as session:
        step = session.scalars(select(SequenceStep).where(SequenceStep.stepOrder == 1)).one()
        session.add_all(
            [
                SequenceStepVariant(stepId=step.id, key="A", weight=1),
                SequenceStepVariant(stepId=step.id, key="B", weight=1, subjectTemplate="Hi B"),
            ]
        )
    pregenerate()
    assert pregenerate().drafted == 6
    before = chat_requests(llm)
    send_due()
    assert chat_requests(llm) == before  # every draft matched: the variant is in its hash
    with sessions() as session:
        rows = session.execute(
            select(
                GeneratedMessage.variantKey, EmailSend.variantKey, GeneratedMessage.pricing
            ).join(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
        ).all()
    assert len(rows) == 6
    assert all(message == send and message in {"A", "B"} for message, send, _ in rows)
    assert {pricing for _, _, pricing in rows} == {"batch"}


def test_a_lead_changed_before_the_batch_is_read_is_stale_and_generated_when_due(llm, sessions):
    leads = seed(sessions, 2)
    pregenerate()
    with sessions.begin() as session:
        session.execute(update(Lead).where(Lead.id == leads[0]).values(firstName="Ann"))
    read = pregenerate(submit=False)
    assert (read.drafted, read.stale) == (1, 1)
    # The next run submits the changed lead again: its new input has a new custom_id.
    assert pregenerate().submitted_requests == 1
    assert sends_per_lead(sessions) == {}


@pytest.mark.parametrize(
    ("faults", "drafted", "failed"),
    [
        ({"status": "expired", "expire_after": 1}, 1, 3),
        ({"status": "failed"}, 0, 4),
        ({"error_every": 2, "malformed_every": 3}, 1, 3),
    ],
)
def test_expired_failed_and_erroring_batches_fall_back_to_synchronous(
    llm, sessions, faults, drafted, failed
):
    leads = seed(sessions, 4)
    llm.batch_faults(**faults)
    pregenerate()
    read = pregenerate(submit=False)
    assert (read.drafted, read.failed) == (drafted, failed)
    with sessions() as session:
        statuses = session.scalars(select(GenerationBatchRequest.status)).all()
    assert sorted(statuses) == sorted(["drafted"] * drafted + ["failed"] * failed)

    before = chat_requests(llm)
    send_due()
    assert chat_requests(llm) - before == failed  # no lead lost: the rest generate now
    assert sends_per_lead(sessions) == {lead: 1 for lead in leads}


def test_an_open_batch_is_left_open_and_its_leads_not_submitted_again(llm, sessions):
    seed(sessions, 2)
    llm.batch_faults(status="in_progress")
    assert pregenerate().submitted_requests == 2
    again = pregenerate()
    assert (again.still_open, again.submitted_requests) == (1, 0)
    llm.finish_batches()
    assert pregenerate(submit=False).drafted == 2


@pytest.mark.parametrize(
    ("point", "adopted", "dropped"),
    [
        # Killed after batches.create, before its id was committed: found again by metadata.
        ("pregeneration.after_submit", 1, 0),
        # Killed after the upload, before batches.create: the API never had it.
        ("pregeneration.after_upload", 0, 1),
    ],
)
def test_a_run_killed_between_upload_and_record_submits_nothing_twice(
    worker_env, sessions, point, adopted, dropped
):
    leads = seed(sessions, 3)
    with FakeOpenAI() as server:
        settings = {"OPENAI_API_KEY": "sk-test-not-real", "OPENAI_BASE_URL": server.base_url}
        run_killed_worker("tests.support.run_pregenerate", [AS_OF.isoformat()], point, settings)
        with sessions() as session:
            recorded = session.scalars(select(GenerationBatch.status)).all()
        assert recorded == ["preparing"]  # committed before the upload, never marked submitted
        for name, value in settings.items():
            worker_env.setenv(name, value)
        rerun = asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF))
        assert (rerun.adopted, rerun.dropped) == (adopted, dropped)
        later = asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF, submit=False))
        assert rerun.drafted + later.drafted == 3
        submissions = server.stats().batch_submissions
    assert len(submissions) == 3 and set(submissions.values()) == {1}
    with sessions() as session:
        per_lead = session.execute(
            select(GeneratedMessage.leadId, func.count()).group_by(GeneratedMessage.leadId)
        ).all()
    assert dict(per_lead) == {lead: 1 for lead in leads}


# USD per 1M tokens (input, cached input, output): large, so the 6-decimal rounding of costUsd
# is far below what the comparison checks.
PRICE = (1000.0, 400.0, 3000.0)
# A model in no price table: its calls' cost is unknown.
UNPRICED_MODEL = "gpt-9-turbo"


def run_warnings(state) -> list[str]:
    """The WARNING lines a finished flow run logged."""
    logs = asyncio.run(run_logs(state.state_details.flow_run_id))
    return [log.message for log in logs if log.level == logging.WARNING]


def write_ahead_and_send(llm, sessions, run_settings) -> None:
    """Three leads written ahead and two due too soon for a batch (generated synchronously),
    all sent, at PRICE."""
    llm.configure(prompt_caching=True)
    input_, cached_input, output = PRICE
    run_settings.update(
        openai_prices={
            "gpt-4o-mini": {"input": input_, "cached_input": cached_input, "output": output}
        }
    )
    seed_dues(sessions, [DUE] * 3 + [AS_OF + timedelta(hours=12)] * 2)
    pregenerate()
    pregenerate(submit=False)
    send_due()


def report_now(sessions):
    """The campaign report over the messages written by the test, and their recorded tokens."""
    with sessions() as session:
        recorded = session.execute(
            select(
                GeneratedMessage.promptTokens,
                GeneratedMessage.cachedTokens,
                GeneratedMessage.completionTokens,
                GeneratedMessage.pricing,
                GeneratedMessage.costUsd,
            )
        ).all()
        now = datetime.now(UTC)
        window = ReportWindow(since=now - timedelta(days=1), until=now + timedelta(days=1))
        report = compute_campaign_report(read_report_inputs(session, window), window)
    return report, recorded


def hand_computed(recorded) -> dict[str, float]:
    """The spend of the priced messages from their recorded tokens, at PRICE, batch at half."""
    input_, cached_input, output = PRICE

    def usd(prompt: int, cached: int, completion: int) -> float:
        return ((prompt - cached) * input_ + cached * cached_input + completion * output) / 1e6

    priced = [r for r in recorded if r.costUsd is not None]
    batch = [r for r in priced if r.pricing == "batch"]
    sync = [r for r in priced if r.pricing == "standard"]
    assert (len(batch), len(sync)) == (3, 2)
    # The fake caches a repeated system message: the first request of the run pays it in full.
    assert all(r.cachedTokens > 0 for r in sync) and sum(r.cachedTokens for r in batch) > 0
    batch_uncached = sum(
        usd(r.promptTokens, 0, r.completionTokens) - usd(r.cachedTokens, 0, 0) for r in batch
    )
    sync_uncached = sum(
        usd(r.promptTokens, 0, r.completionTokens) - usd(r.cachedTokens, 0, 0) for r in sync
    )
    cached = sum(r.cachedTokens * cached_input / 1e6 for r in sync) + sum(
        r.cachedTokens * cached_input / 1e6 / 2 for r in batch
    )
    all_sync = sum(usd(r.promptTokens, r.cachedTokens, r.completionTokens) for r in priced)
    spent = batch_uncached / 2 + sync_uncached + cached
    return {
        "sync": sync_uncached,
        "batch": batch_uncached / 2,
        "cached": cached,
        "spent": spent,
        "saving": all_sync - spent,
    }


def assert_spend(row: dict, expected: dict[str, float], *, priced: int) -> None:
    """The report's spend and its split as computed by hand, per 1,000 of the priced emails."""
    assert row["sync_cost_usd"] == pytest.approx(expected["sync"], abs=1e-5)
    assert row["batch_cost_usd"] == pytest.approx(expected["batch"], abs=1e-5)
    assert row["cached_cost_usd"] == pytest.approx(expected["cached"], abs=1e-5)
    assert row["cost_usd"] == pytest.approx(expected["spent"], abs=1e-5)
    assert row["saving_usd"] == pytest.approx(expected["saving"], abs=1e-5)
    per_1000 = {
        "cost_usd_per_1000": expected["spent"],
        "saving_usd_per_1000": expected["saving"],
    }
    for column, usd in per_1000.items():
        assert row[column] == pytest.approx(usd * 1000 / priced, abs=1e-2), column
    assert row["saving_usd"] > 0.1  # the figures are not all zero


def test_the_report_splits_the_spend_and_its_saving_matches_a_hand_computation(
    llm, sessions, run_settings
):
    write_ahead_and_send(llm, sessions, run_settings)
    report, recorded = report_now(sessions)
    (row,) = report.table("campaign")
    assert (row["generated"], row["unpriced"]) == (5, 0)
    assert_spend(row, hand_computed(recorded), priced=5)
    assert "no price" not in summary_markdown(report)


def test_emails_of_a_model_with_no_price_are_left_out_of_the_spend_and_named(
    llm, sessions, run_settings
):
    write_ahead_and_send(llm, sessions, run_settings)
    # The model changes to one no table prices; two more leads are generated synchronously.
    run_settings.update(openai_model=UNPRICED_MODEL)
    seed_dues(sessions, [AS_OF + timedelta(hours=12)] * 2)
    state = asyncio.run(process_campaign_sends(as_of=DUE + timedelta(minutes=1), return_state=True))

    report, recorded = report_now(sessions)
    unpriced = [r for r in recorded if r.costUsd is None]
    assert len(unpriced) == 2 and {r.pricing for r in unpriced} == {"standard"}
    assert all(r.promptTokens > 0 for r in unpriced)  # the tokens are known, the price is not
    with sessions() as session:
        cached_costs = session.scalars(
            select(GeneratedMessage.cachedCostUsd).where(GeneratedMessage.costUsd.is_(None))
        ).all()
    assert cached_costs == [None, None]
    # One WARNING for the run, naming the model and the setting.
    warnings = run_warnings(state)
    assert len(warnings) == 1
    assert f"'{UNPRICED_MODEL}'" in warnings[0] and "OPENAI_PRICES" in warnings[0]

    total = report.totals()
    assert (total["generated"], total["unpriced"]) == (7, 2)
    expected = hand_computed(recorded)
    assert_spend(total, expected, priced=5)
    # Folded in as free, the two would have lowered every per-1,000 figure by two sevenths.
    assert total["cost_usd_per_1000"] != pytest.approx(expected["spent"] * 1000 / 7, abs=1e-2)
    rows = {row["unpriced"]: row for row in report.table("campaign")}
    assert rows[2]["cost_usd"] == 0 and rows[2]["cost_usd_per_1000"] is None
    summary = summary_markdown(report)
    assert f"2 email(s) by model `{UNPRICED_MODEL}` have no price; add it to OPENAI_PRICES" in (
        summary
    )
    assert "over the 5 priced one(s) only" in summary


def test_drafts_of_a_model_with_no_price_keep_their_cost_unknown_when_used(
    llm, sessions, run_settings
):
    run_settings.update(openai_model=UNPRICED_MODEL)
    leads = seed(sessions, 2)
    runs = [
        asyncio.run(pregenerate_upcoming_steps(as_of=AS_OF, submit=submit, return_state=True))
        for submit in (True, False)
    ]
    for state in runs:
        warnings = run_warnings(state)
        assert len(warnings) == 1 and f"'{UNPRICED_MODEL}'" in warnings[0]
    before = chat_requests(llm)
    send_due()
    assert chat_requests(llm) == before  # the drafts were used
    with sessions() as session:
        rows = session.execute(
            select(
                GeneratedMessage.status,
                GeneratedMessage.pricing,
                GeneratedMessage.costUsd,
                GeneratedMessage.cachedCostUsd,
            )
        ).all()
    assert sorted(rows) == [("generated", "batch", None, None)] * len(leads)


def linking_responder(request):
    """A draft with a link the campaign does not allow: the quality gate refuses it."""
    answer = default_responder(request)
    return {**answer, "body": answer["body"] + "\n\nSee https://unlisted.example/offer"}


def test_an_answer_that_fails_the_gate_is_not_stored_and_the_lead_generates_when_due(llm, sessions):
    leads = seed(sessions, 2)
    llm.set_responder(linking_responder)
    pregenerate()
    read = pregenerate(submit=False)
    assert (read.drafted, read.rejected) == (0, 2)
    with sessions() as session:
        errors = session.scalars(select(GenerationBatchRequest.error)).all()
    assert all(error.startswith("quality gate: ") for error in errors)
    assert messages(sessions) == []  # nothing ungated is ever kept as a draft
    llm.set_responder(None)
    before = chat_requests(llm)
    send_due()
    assert chat_requests(llm) - before == 2
    assert sends_per_lead(sessions) == {lead: 1 for lead in leads}
