"""The generation benchmark's world: the instant, the model, the seeded campaigns and leads, and
what a run should leave behind. Shared by generation.py and baseline.py; no Prefect here."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import yaml

from benchmarks.harness.database import TABLES, libpq, one_row
from benchmarks.harness.machine import ROOT, percentile

# Wednesday 25 November 2026, 12:00 UTC. The campaign's window is every day 00:00-23:59, so the
# instant is inside it in every lead time zone used below (London 12:00, New York 07:00, Tokyo
# 21:00) and each send is scheduled for AS_OF itself.
AS_OF = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MODEL = "gpt-4o-mini"
DUMMY_KEY = "sk-bench-not-a-real-key"
# What-if runs for the bottleneck analysis (benchmarks/generation_flow.py: apply_variant).
VARIANTS = ("baseline", "no-result-store", "no-llm-http", "no-result-store+no-llm-http")


def demo_campaign() -> dict[str, Any]:
    """The demo campaign's goal and three steps, with a window open all day every day in UTC."""
    campaign = yaml.safe_load((ROOT / "demo" / "campaign.yaml").read_text())
    rules = dict(campaign["sendingRules"])
    rules["timezone"] = "UTC"
    rules["window"] = {
        "start": "00:00",
        "end": "23:59",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    }
    return {"goal": campaign["goal"], "rules": rules, "steps": campaign["steps"]}


LEAD_COLUMNS = """
    "Lead" (id, "workspaceId", email, "firstName", "lastName", "companyName", title, industry,
            "companySize", website, timezone, "customFields", "updatedAt")
"""
# One unique profile per lead (companyName and email carry g), so no two leads share a cache key.
LEAD_VALUES = """
    'bl' || g, 'bench-ws', 'lead' || g || '@buyer' || (g %% 997) || '.example',
    CASE WHEN g %% 20 = 0 THEN NULL
         ELSE (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken'])[1 + g %% 8]
    END,
    (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Thompson'])
        [1 + (g / 8) %% 8],
    (ARRAY['Northwind','Globex','Initech','Umbrella','Hooli','Stark'])[1 + g %% 6] || ' ' || g,
    (ARRAY['VP Sales','Head of Growth','CTO','Founder','Director of Marketing'])[1 + g %% 5],
    CASE WHEN g %% 7 = 0 THEN NULL
         ELSE (ARRAY['SaaS','Fintech','Healthcare','Logistics','Retail'])[1 + g %% 5] END,
    (ARRAY['11-50','51-200','201-500','501-1000','1000+'])[1 + g %% 5],
    'https://company' || g || '.example',
    (ARRAY['Europe/London','America/New_York','Asia/Tokyo',NULL])[1 + g %% 4],
    jsonb_build_object('plan', (ARRAY['starter','growth','enterprise'])[1 + g %% 3]),
    now()
"""


def _seed_campaigns(conn: psycopg.Connection, campaigns: int) -> None:
    demo = demo_campaign()
    conn.execute(
        """INSERT INTO "Workspace" (id, name, "updatedAt") VALUES ('bench-ws', 'Bench', now())"""
    )
    conn.execute(
        """
        INSERT INTO "Campaign" (id, "workspaceId", name, status, "sendingRules", goal,
                                "updatedAt")
        SELECT 'bc' || g, 'bench-ws', 'Discovery calls ' || g, 'active',
               CAST(%(rules)s AS jsonb), %(goal)s, now()
        FROM generate_series(1, %(campaigns)s) g
        """,
        {"rules": json.dumps(demo["rules"]), "goal": demo["goal"], "campaigns": campaigns},
    )
    for step in demo["steps"]:
        conn.execute(
            """
            INSERT INTO "SequenceStep" (id, "campaignId", "stepOrder", "delayDays",
                                        "subjectTemplate", "bodyTemplate", "aiInstructions")
            SELECT 'bc' || g || '-s' || %(order)s, 'bc' || g, %(order)s, %(delay)s,
                   %(subject)s, %(body)s, %(instructions)s
            FROM generate_series(1, %(campaigns)s) g
            """,
            {
                "order": step["stepOrder"],
                "delay": step["delayDays"],
                "subject": step["subjectTemplate"],
                "body": step["bodyTemplate"],
                "instructions": step["aiInstructions"],
                "campaigns": campaigns,
            },
        )


def seed_due_leads(url: str, n: int) -> float:
    """Empty the database, then one campaign with n due leads at step 1; returns seconds taken."""
    started = time.perf_counter()
    as_of = AS_OF.replace(tzinfo=None)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        _seed_campaigns(conn, 1)
        conn.execute(
            f"INSERT INTO {LEAD_COLUMNS} SELECT {LEAD_VALUES} FROM generate_series(1, %(n)s) g",
            {"n": n},
        )
        # Due oldest first, one second apart, all at step 1 of the 3-step campaign.
        conn.execute(
            """
            INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status, "currentStepOrder",
                                        "nextScheduledDate", "updatedAt")
            SELECT 'bcl' || g, 'bc1', 'bl' || g, 'active', 1,
                   CAST(%(as_of)s AS timestamp) - (%(n)s - g + 60) * interval '1 second', now()
            FROM generate_series(1, %(n)s) g
            """,
            {"n": n, "as_of": as_of},
        )
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def seed_million(url: str, rows: int, campaigns: int) -> tuple[float, int]:
    """rows CampaignLeads over `campaigns` campaigns, 0.5% due; returns (seconds, due count).

    Like tests/integration/test_due_index.py: 60% completed, 10% replied, 30% active of which
    most are due later; every 200th enrolment is due now. One Lead per enrolment.
    """
    started = time.perf_counter()
    as_of = AS_OF.replace(tzinfo=None)
    per_campaign = rows // campaigns
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        _seed_campaigns(conn, campaigns)
        conn.execute(
            f"INSERT INTO {LEAD_COLUMNS} SELECT {LEAD_VALUES} FROM generate_series(0, %(n)s) g",
            {"n": rows - 1},
        )
        conn.execute(
            """
            INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status, "currentStepOrder",
                                        "nextScheduledDate", "updatedAt")
            SELECT 'bcl' || g, 'bc' || (g / %(per)s + 1), 'bl' || g,
                   CASE WHEN g %% 10 < 6 THEN 'completed'
                        WHEN g %% 10 < 7 THEN 'replied' ELSE 'active' END,
                   1 + g %% 3,
                   CASE WHEN g %% 10 < 7 THEN NULL
                        WHEN g %% 200 = 9
                            THEN CAST(%(as_of)s AS timestamp) - (g %% 3600 + 60) * interval '1 s'
                        ELSE CAST(%(as_of)s AS timestamp) + (g %% 72) * interval '1 hour'
                             + interval '1 minute' END,
                   now()
            FROM generate_series(0, %(last)s) g
            """,
            {"per": per_campaign, "as_of": as_of, "last": rows - 1},
        )
        _seed_history(conn, per_campaign, rows - 1, as_of)
        conn.execute("VACUUM ANALYZE")
        counted = conn.execute(
            """SELECT count(*) FROM "CampaignLead"
               WHERE status = 'active' AND "nextScheduledDate" <= %(as_of)s""",
            {"as_of": as_of},
        )
        due = one_row(counted)[0]
    return time.perf_counter() - started, due


# About the length of a sent email body (the demo's first step, rendered, is ~330 characters).
_SENT_BODY = "We help teams like yours book more discovery calls without adding headcount. " * 8


def _seed_history(conn: psycopg.Connection, per_campaign: int, last: int, as_of: datetime) -> None:
    """What the active enrolments past step 1 were sent: one `sent` EmailSend and its message per
    earlier step, a click on a quarter of them and an auto-reply on a tenth, which a follow-up's
    claim loads as its thread."""
    params = {"per": per_campaign, "last": last, "body": _SENT_BODY, "as_of": as_of}
    earlier_steps = """
        FROM generate_series(0, %(last)s) g, generate_series(1, g %% 3) k
        WHERE g %% 10 >= 7
    """
    conn.execute(
        f"""
        INSERT INTO "GeneratedMessage" (id, "campaignId", "leadId", "stepId", subject, body)
        SELECT 'bgm' || g || '-' || k, 'bc' || (g / %(per)s + 1), 'bl' || g,
               'bc' || (g / %(per)s + 1) || '-s' || k, 'Step ' || k || ' for lead ' || g,
               %(body)s
        {earlier_steps}
        """,
        params,
    )
    conn.execute(
        f"""
        INSERT INTO "EmailSend" (id, "campaignId", "leadId", "stepId", "generatedMessageId",
                                 "toEmail", status, "scheduledFor", "sentAt", "updatedAt")
        SELECT 'bes' || g || '-' || k, 'bc' || (g / %(per)s + 1), 'bl' || g,
               'bc' || (g / %(per)s + 1) || '-s' || k, 'bgm' || g || '-' || k,
               'lead' || g || '@buyer' || (g %% 997) || '.example', 'sent',
               CAST(%(as_of)s AS timestamp) - (4 - k) * interval '3 days',
               CAST(%(as_of)s AS timestamp) - (4 - k) * interval '3 days', now()
        {earlier_steps}
        """,
        params,
    )
    conn.execute(
        """
        INSERT INTO "EngagementEvent" (id, "emailSendId", type, "occurredAt", "dedupeKey")
        SELECT 'bev-' || s.id || '-' || kind, s.id, kind,
               s."sentAt" + CASE kind WHEN 'click' THEN interval '2 hours'
                                      ELSE interval '5 minutes' END,
               'bench:' || s.id || '-' || kind
        FROM "EmailSend" s,
             LATERAL (VALUES ('click', hashtext(s.id) % 4 = 0),
                             ('auto_reply', hashtext(s.id) % 10 = 0)) AS e(kind, wanted)
        WHERE e.wanted
        """
    )


def verify_run(url: str, n: int) -> dict[str, int]:
    """What the run left in the database: every lead should have a generated message and send."""
    with psycopg.connect(libpq(url)) as conn:
        counted = conn.execute(
            """
            SELECT (SELECT count(*) FROM "EmailSend" WHERE status = 'scheduled'),
                   (SELECT count(*) FROM "GeneratedMessage"
                     WHERE model = %(model)s AND "fallbackReason" IS NULL),
                   (SELECT count(*) FROM "CampaignLead" WHERE "currentStepOrder" = 2
                     AND "claimToken" IS NULL)
            """,
            {"model": MODEL},
        )
        row = one_row(counted)
    return {"sends": row[0], "llm_messages": row[1], "advanced": row[2], "expected": n}


def llm_latency_ms(url: str) -> dict[str, float | None]:
    """GeneratedMessage.latencyMs: the openai call alone, timed by the pipeline's generator."""
    with psycopg.connect(libpq(url)) as conn:
        values = [r[0] for r in conn.execute('SELECT "latencyMs" FROM "GeneratedMessage"')]
    return {"p50": percentile(values, 50), "p95": percentile(values, 95)}


def sample_messages(url: str, count: int) -> list[list[dict[str, str]]]:
    """The exact messages the pipeline sends for the first `count` seeded leads."""
    from core.generation.generate import Prepared, prepare
    from db.engine import make_engine, make_session_factory
    from db.queries.claims import preview_due_leads

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            leads = preview_due_leads(session, as_of=AS_OF, now=AS_OF, limit=count)
    finally:
        engine.dispose()
    prepared = [prepare(lead, model=MODEL) for lead in leads]
    return [p.messages() for p in prepared if isinstance(p, Prepared)]
