"""The claim at a million rows: EXPLAIN ANALYZE of the statement claim_due_leads() sends, and
schema what-ifs tried on the benchmark's throwaway database only (never a migration)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import make_url
from sqlalchemy.orm import Session

from benchmarks.generation_setup import AS_OF
from benchmarks.harness.database import capture_statements, explain_analyze, libpq, plan_ms
from core.generation.due_lead import DueLead
from db.engine import make_engine
from db.queries.claims import claim_due_leads


def explain_claim(url: str, runs: int, batch: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement claim_due_leads() sends, rolled back each time.

    The statement and its parameters are captured from a real claim_due_leads() call, so the
    plan is that of the SQL the pipeline runs. Each run is its own transaction, rolled back, so
    every run claims the same 500 oldest due rows. Also times claim_due_leads() itself (query,
    fetch, the follow-ups' thread statement and DueLead validation) the same way, on one
    connection, as a worker reuses one, and EXPLAINs the thread statement it sent.
    """
    engine = make_engine(url)
    captured = capture_statements(engine, "SKIP LOCKED")
    planner = capture_statements(engine, "set_config(")
    thread_statements = capture_statements(engine, "AS text) AS thread")

    def claim(session: Session) -> list[DueLead]:
        _, leads = claim_due_leads(
            session,
            as_of=AS_OF,
            now=datetime.now(UTC),
            limit=batch,
            worker="bench",
            lease=timedelta(minutes=10),
        )
        return leads

    function_ms: list[float] = []
    leads: list[DueLead] = []
    with Session(engine) as session:
        for _ in range(runs + 1):  # the first run warms the cache and is discarded
            with session.begin():
                started = time.perf_counter()
                leads = claim(session)
                function_ms.append(1000 * (time.perf_counter() - started))
                session.rollback()

    def explain(
        captured: list[tuple[str, Any]], settings: tuple[str, Any] | None = None
    ) -> tuple[list[str], list[float], list[float]]:
        statement, params = captured[0]
        plans: list[str] = []
        execution: list[float] = []
        planning: list[float] = []
        with engine.connect() as conn:
            for _ in range(runs + 1):
                with conn.begin() as tx:
                    if settings is not None:
                        conn.exec_driver_sql(*settings)  # the claim's own planner settings
                    plan = explain_analyze(conn, statement, params)
                    tx.rollback()
                plans.append(plan)
                execution.append(plan_ms(plan, "Execution Time"))
                planning.append(plan_ms(plan, "Planning Time"))
        return plans[1:], execution[1:], planning[1:]

    plans, execution, planning = explain(captured, planner[0] if planner else None)
    follow_ups = sum(lead.stepOrder > 1 for lead in leads)
    # No follow-up in the batch, no thread statement (db.queries.threads.due_leads).
    assert bool(thread_statements) == bool(follow_ups), "the thread statement was not captured"
    threads = explain(thread_statements)[1] if follow_ups else []
    engine.dispose()
    function_ms = function_ms[1:]
    middle = sorted(range(runs), key=lambda i: execution[i])[runs // 2]
    return {
        "runs": runs,
        "batch": batch,
        "claimed": len(leads),
        "follow_ups": follow_ups,
        "sent_emails_in_threads": sum(len(lead.thread) for lead in leads),
        "thread_execution_ms": threads,
        "thread_execution_ms_median": statistics.median(threads) if threads else None,
        "execution_ms": execution,
        "execution_ms_median": statistics.median(execution),
        "planning_ms": planning,
        "planning_ms_median": statistics.median(planning),
        "function_ms": function_ms,
        "function_ms_median": statistics.median(function_ms),
        "plan": plans[middle],
        "statement": captured[0][0],
    }


def claim_what_ifs(
    url: str, runs: int, batch: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """HOT updates (fillfactor 80), an index matching the claim's ORDER BY, and a session
    without bitmap scans, one after another; each measured like the claim itself."""

    def sql(statement: str) -> None:
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute(statement)

    index = (
        'CREATE INDEX bench_due_order_idx ON "CampaignLead" ("nextScheduledDate", id) '
        """WHERE status = 'active' AND "nextScheduledDate" IS NOT NULL"""
    )
    no_bitmap = make_url(url).update_query_dict({"options": "-c enable_bitmapscan=off"})
    steps = (
        ("as seeded, after VACUUM", ['VACUUM ANALYZE "CampaignLead"'], url),
        (
            "fillfactor 80 (HOT updates)",
            [
                'ALTER TABLE "CampaignLead" SET (fillfactor = 80)',
                'VACUUM FULL ANALYZE "CampaignLead"',
            ],
            url,
        ),
        (
            "+ index (nextScheduledDate, id) WHERE active",
            [index, 'VACUUM ANALYZE "CampaignLead"'],
            url,
        ),
        (
            "+ enable_bitmapscan = off (session)",
            ['VACUUM ANALYZE "CampaignLead"'],
            no_bitmap.render_as_string(hide_password=False),
        ),
    )
    found = []
    for label, statements, step_url in steps:
        for statement in statements:
            sql(statement)
        result = explain_claim(step_url, runs, batch)
        found.append(
            {
                "what_if": label,
                "execution_ms_median": result["execution_ms_median"],
                "execution_ms": result["execution_ms"],
                "function_ms_median": result["function_ms_median"],
                "plan": result["plan"],
            }
        )
        log(
            f"claim what-if {label}: execution median {result['execution_ms_median']:.1f} ms,"
            f" claim_due_leads() {result['function_ms_median']:.1f} ms"
        )
    return found
