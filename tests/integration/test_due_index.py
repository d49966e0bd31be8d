"""The due query stays an index scan with a million enrolments in the table."""

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text

from db.engine import upgrade
from tests.conftest import create_database, drop_database, worker_id

MILLION = 1_000_000

SEED = """
INSERT INTO "Workspace" (id, name, "updatedAt") VALUES ('w', 'W', now());
INSERT INTO "Campaign" (id, "workspaceId", name, status, "updatedAt")
    SELECT 'c' || g, 'w', 'C' || g, 'active', now() FROM generate_series(1, 1000) g;
INSERT INTO "Lead" (id, "workspaceId", email, "updatedAt")
    SELECT 'l' || g, 'w', 'lead' || g || '@example.com', now() FROM generate_series(1, 1000) g;
-- 1,000 campaigns x 1,000 leads. Most enrolments are finished or due later;
-- 0.5% (5,000) are due now, which is what the every-few-minutes cron sees.
INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status, "currentStepOrder",
                            "nextScheduledDate", "updatedAt")
    SELECT 'cl' || g,
           'c' || (g / 1000 + 1),
           'l' || (g % 1000 + 1),
           CASE WHEN g % 10 < 6 THEN 'completed' WHEN g % 10 < 7 THEN 'replied' ELSE 'active' END,
           2,
           CASE WHEN g % 10 < 7 THEN NULL
                WHEN g % 200 = 9 THEN now() - interval '1 hour'
                ELSE now() + (g % 72) * interval '1 hour' + interval '1 hour' END,
           now()
    FROM generate_series(0, 999999) g;
ANALYZE;
"""


@pytest.fixture(scope="module")
def million_url(server_url):
    name = f"cp_million_{worker_id()}"
    url = create_database(server_url, name)
    upgrade(url)
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(SEED)
    yield url
    drop_database(server_url, make_url(url).database)


def _plan(url: str, query: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {query}")).scalars().all()
    engine.dispose()
    return "\n".join(rows)


@pytest.mark.slow
def test_seed_due_query_uses_the_due_index(million_url):
    plan = _plan(
        million_url,
        """SELECT * FROM "CampaignLead"
           WHERE status = 'active' AND "nextScheduledDate" <= now()""",
    )
    assert "CampaignLead_due_idx" in plan, plan
    assert 'Seq Scan on "CampaignLead"' not in plan, plan
    assert "actual time" in plan and "rows=5000" in plan, plan


@pytest.mark.slow
def test_oldest_due_batch_is_a_plain_index_scan(million_url):
    plan = _plan(
        million_url,
        """SELECT cl.id FROM "CampaignLead" cl JOIN "Campaign" c ON c.id = cl."campaignId"
           WHERE cl.status = 'active' AND cl."nextScheduledDate" <= now() AND c.status = 'active'
           ORDER BY cl."nextScheduledDate" LIMIT 500""",
    )
    assert 'Index Scan using "CampaignLead_due_idx"' in plan, plan
    assert 'Seq Scan on "CampaignLead"' not in plan, plan
