"""Throughput, latency, memory and claim-cost benchmark of `process-campaign-sends`.

Runs the real flow under a Prefect API (the test harness, started once) against the fake OpenAI
server in a child process, on a database this script creates beside DATABASE_URL (else on the
embedded server) and drops at the end. Every measured flow run, and every bare-client run, is a
fresh child process of this script, so peak RSS is per run and no run warms another's caches.

    PYTHONPATH=. .venv/bin/python benchmarks/generation.py --json benchmarks/results.json

See docs/benchmarks.md for what each figure means and the results on the reference machine.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import event, make_url  # noqa: E402

# Wednesday 25 November 2026, 12:00 UTC. The campaign's window is every day 00:00-23:59, so the
# instant is inside it in every lead time zone used below (London 12:00, New York 07:00, Tokyo
# 21:00) and each send is scheduled for AS_OF itself.
AS_OF = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MODEL = "gpt-4o-mini"
DUMMY_KEY = "sk-bench-not-a-real-key"
RESULT_MARKER = "BENCH-RESULT "
TABLES = (
    '"EngagementEvent"',
    '"EmailSend"',
    '"GeneratedMessage"',
    '"CampaignLead"',
    '"SequenceStep"',
    '"Suppression"',
    '"Lead"',
    '"Campaign"',
    '"Workspace"',
)


# --------------------------------------------------------------------------------------------
# Small helpers


def percentile(values: Any, q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a sequence, None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq/psycopg wants it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def rss_now_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    """This process's own peak RSS in KiB (VmHWM). Not getrusage's ru_maxrss: Linux carries a
    parent's peak over fork and exec, so a child would report at least its parent's RSS."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def proc_cpu(pid: int | None, *, children: bool = False) -> float | None:
    """User+system CPU seconds of a process (and of its reaped children), None if unreadable."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def pg_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of a local PostgreSQL: postmaster, its reaped children, and live children."""
    total = proc_cpu(postmaster, children=True)
    if total is None:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == postmaster:
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_info(server_version: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "ram_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "python": platform.python_version(),
        "postgresql": server_version,
        "kernel": platform.release(),
    }


# --------------------------------------------------------------------------------------------
# Databases


def server_url() -> str:
    """The maintenance database of DATABASE_URL's server, else of the embedded server."""
    from core.settings import Settings
    from db.engine import resolve_database_url

    url = resolve_database_url(Settings(), migrate=False)
    return with_database(url, "postgres")


def create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_facts(url: str) -> tuple[str, int | None]:
    """(server version string, postmaster pid if the server runs on this machine)."""
    with psycopg.connect(libpq(url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
            postmaster: int | None = int(stat[1])
        except OSError:
            postmaster = None
    return version, postmaster


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
        conn.execute("VACUUM ANALYZE")
        due = conn.execute(
            """SELECT count(*) FROM "CampaignLead"
               WHERE status = 'active' AND "nextScheduledDate" <= %(as_of)s""",
            {"as_of": as_of},
        ).fetchone()[0]
    return time.perf_counter() - started, due


def verify_run(url: str, n: int) -> dict[str, int]:
    """What the run left in the database: every lead should have a generated message and send."""
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            """
            SELECT (SELECT count(*) FROM "EmailSend" WHERE status = 'scheduled'),
                   (SELECT count(*) FROM "GeneratedMessage"
                     WHERE model = %(model)s AND "fallbackReason" IS NULL),
                   (SELECT count(*) FROM "CampaignLead" WHERE "currentStepOrder" = 2
                     AND "claimToken" IS NULL)
            """,
            {"model": MODEL},
        ).fetchone()
    return {"sends": row[0], "llm_messages": row[1], "advanced": row[2], "expected": n}


def llm_latency_ms(url: str) -> dict[str, float | None]:
    """GeneratedMessage.latencyMs: the openai call alone, timed by the pipeline's generator."""
    with psycopg.connect(libpq(url)) as conn:
        values = [r[0] for r in conn.execute('SELECT "latencyMs" FROM "GeneratedMessage"')]
    return {"p50": percentile(values, 50), "p95": percentile(values, 95)}


# --------------------------------------------------------------------------------------------
# Child: one flow run


class Probe:
    """Timestamps around the flow's database work and each lead's generation, from outside.

    Patches the names tasks.generation calls (the claim query, the unit of work, the writes and
    generate_for_lead) with thin wrappers; the code under test is unchanged. Per batch it keeps
    the claim commit, the write commit and how long each transaction took; per lead, the time
    from its batch's claim commit to its own generation finishing (a float array, 8 bytes a
    lead, so it barely moves peak RSS).
    """

    def __init__(self) -> None:
        self.local = threading.local()
        self.claims: dict[str, tuple[float, int, float]] = {}  # token -> (commit, leads, seconds)
        self.writes: dict[str, tuple[float, float]] = {}  # token -> (commit, seconds)
        self.lead_claimed: dict[str, float] = {}  # in-flight leads only
        self.generated = array.array("d")

    def install(self) -> None:
        import tasks.generation as tg

        claim_query, record, hold = tg.claim_due_leads_query, tg.record_messages, tg.hold_leads
        unit_of_work, generate_for_lead = tg.unit_of_work, tg.generate_for_lead
        probe = self

        def claim_wrapper(session, **kwargs):
            token, leads = claim_query(session, **kwargs)
            probe.local.pending = ("claim", token, [lead.campaignLeadId for lead in leads])
            return token, leads

        def record_wrapper(session, *, token, now, writes):
            probe.local.pending = ("write", token, [w.campaignLeadId for w in writes])
            return record(session, token=token, now=now, writes=writes)

        def hold_wrapper(session, *, token, now, holds):
            written = probe.local.pending[2] if getattr(probe.local, "pending", None) else []
            ids = written + [h.campaignLeadId for h in holds]
            probe.local.pending = ("write", token, ids)
            return hold(session, token=token, now=now, holds=holds)

        @contextlib.contextmanager
        def uow_wrapper(factory):
            probe.local.pending = None
            started = time.perf_counter()
            with unit_of_work(factory) as session:
                yield session
            done = time.perf_counter()  # after COMMIT
            pending, probe.local.pending = probe.local.pending, None
            if pending is None:
                return
            kind, token, ids = pending
            if kind == "claim":
                probe.claims[token] = (done, len(ids), done - started)
                for lead_id in ids:
                    probe.lead_claimed[lead_id] = done
            else:
                probe.writes[token] = (done, done - started)
                for lead_id in ids:
                    probe.lead_claimed.pop(lead_id, None)

        async def generate_wrapper(prepared, generator, cache, *, model):
            outcome = await generate_for_lead(prepared, generator, cache, model=model)
            claimed = probe.lead_claimed.get(prepared.lead.campaignLeadId)
            if claimed is not None:
                probe.generated.append(time.perf_counter() - claimed)
            return outcome

        tg.claim_due_leads_query = claim_wrapper
        tg.record_messages = record_wrapper
        tg.hold_leads = hold_wrapper
        tg.unit_of_work = uow_wrapper
        tg.generate_for_lead = generate_wrapper

    def summary(self) -> dict[str, Any]:
        per_lead: list[float] = []
        for token, (claimed, count, _) in self.claims.items():
            if token in self.writes:
                per_lead.extend([self.writes[token][0] - claimed] * count)
        first = min((c[0] for c in self.claims.values()), default=None)
        last = max((w[0] for w in self.writes.values()), default=None)
        written = sum(c[1] for t, c in self.claims.items() if t in self.writes)
        claim_s = [c[2] for c in self.claims.values() if c[1]]
        write_s = [w[1] for w in self.writes.values()]
        return {
            "batches": len(self.writes),
            "steady_seconds": (last - first) if first is not None and last is not None else None,
            "steady_leads": written,
            "lead_claim_to_write_s": {
                "p50": percentile(per_lead, 50),
                "p95": percentile(per_lead, 95),
                "max": max(per_lead, default=None),
            },
            "lead_claim_to_generated_s": {
                "p50": percentile(self.generated, 50),
                "p95": percentile(self.generated, 95),
            },
            "claim_tx_s": {"median": median(claim_s), "max": max(claim_s, default=None)},
            "write_tx_s": {"median": median(write_s), "max": max(write_s, default=None)},
            "db_tx_total_s": sum(claim_s) + sum(write_s),
        }


class RssSampler:
    """VmRSS every 0.5 s, to show whether memory grows with the number of leads."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.wait(0.5):
            self.samples.append((time.perf_counter() - started, rss_now_kib()))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


VARIANTS = ("baseline", "no-result-store", "no-llm-http", "no-result-store+no-llm-http")


def apply_variant(variant: str) -> None:
    """What-if runs for the bottleneck analysis; `baseline` is the code as it is.

    no-result-store: the per-lead cache is tasks.generation.NoCache (no ResultStore reads or
    writes). no-llm-http: OpenAIGenerator is replaced by an in-process generator that answers
    like the fake server (draft plus one sentence) without any HTTP or openai client.
    """
    import tasks.generation as tg
    from core.generation.draft import EmailDraft
    from core.generation.llm import Generation
    from core.generation.prompt import extract_draft
    from tests.support.openai_wire import PERSONAL_LINE

    if variant not in VARIANTS:
        raise ValueError(variant)
    if "no-result-store" in variant:
        tg.ResultStoreCache = lambda store: tg.NoCache()
    if "no-llm-http" in variant:

        class InProcessGenerator:
            def __init__(self, **kwargs: Any) -> None:
                pass

            async def aclose(self) -> None:
                pass

            async def generate(self, messages, *, model):
                draft = extract_draft(messages)
                assert draft is not None
                body = f"{PERSONAL_LINE}\n\n{draft.body}"
                return Generation(
                    draft=EmailDraft(subject=draft.subject, body=body),
                    model=model,
                    prompt_tokens=1,
                    completion_tokens=1,
                    latency_ms=0,
                    cost_usd=0.0,
                    attempts=1,
                )

        tg.OpenAIGenerator = InProcessGenerator


class CPUMeter:
    """CPU seconds of this process, the fake server, the Prefect API and PostgreSQL, and how
    busy the machine was, between construction and `stop()`."""

    def __init__(self, fake_pid: int | None, spec: dict[str, Any]) -> None:
        self.pids = (fake_pid, spec.get("prefect_server_pid"), spec.get("postmaster_pid"))
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[Any, ...]:
        fake_pid, api_pid, postmaster_pid = self.pids
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            usage.ru_utime + usage.ru_stime,
            proc_cpu(fake_pid),
            proc_cpu(api_pid),
            pg_cpu(postmaster_pid),
            *machine_jiffies(),
        )

    def stop(self) -> dict[str, Any]:
        """The `cpu_s` figures of a measured run."""
        own0, fake0, api0, pg0, busy0, total0 = self.start
        own1, fake1, api1, pg1, busy1, total1 = self._snapshot()

        def delta(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(b - a, 2)

        return {
            "flow_process": round(own1 - own0, 2),
            "fake_openai": delta(fake0, fake1),
            "prefect_api": delta(api0, api1),
            "postgres": delta(pg0, pg1),
            "machine_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1),
            "cores": os.cpu_count() or 1,
        }


def child_flow(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured flow run; spec comes from the parent as JSON."""
    os.environ.update(
        DATABASE_URL=spec["database_url"],
        OPENAI_API_KEY=DUMMY_KEY,
        OPENAI_MODEL=MODEL,
        LLM_MAX_CONCURRENCY=str(spec["concurrency"]),
    )
    os.environ.pop("LLM_RATE_LIMIT_NAME", None)

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.process_campaign_sends import process_campaign_sends
    from tasks.database import session_factory
    from tests.support.fake_openai import FakeOpenAI

    probe = Probe()
    probe.install()
    apply_variant(spec.get("variant", "baseline"))
    results_dir = tempfile.mkdtemp(prefix="cp-bench-results-")
    n = spec["n"]
    with FakeOpenAI(latency_ms=spec["latency_ms"], process=True, record_bodies=False) as fake:
        os.environ["OPENAI_BASE_URL"] = fake.base_url
        session_factory.cache_clear()
        session_factory()  # connect and check the revision before the clock starts
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results_dir}):
            rss_before = rss_now_kib()
            meter = CPUMeter(fake.child_pid, spec)
            load0 = loadavg()
            if spec.get("start_at"):
                time.sleep(max(0.0, spec["start_at"] - time.time()))
            started_epoch = time.time()
            started = time.perf_counter()
            with RssSampler() as sampler:
                counts = asyncio.run(
                    process_campaign_sends(as_of=AS_OF, batch_size=spec["batch_size"], max_leads=n)
                )
            elapsed = time.perf_counter() - started
            ended_epoch = time.time()
            cpu_s = meter.stop()
            stats = fake.stats()
    session_factory.cache_clear()
    total = {
        key: sum(getattr(c, key) for c in counts.values())
        for key in ("claimed", "generated", "cache_hits", "fell_back", "held", "scheduled")
    }
    samples = sampler.samples
    return {
        "kind": "flow",
        "variant": spec.get("variant", "baseline"),
        "n": n,
        "latency_ms": spec["latency_ms"],
        "concurrency": spec["concurrency"],
        "seconds": elapsed,
        "started_epoch": started_epoch,
        "ended_epoch": ended_epoch,
        "leads_per_s": total["scheduled"] / elapsed,
        "counts": total,
        "llm_requests": stats.requests,
        "rss_before_flow_mib": rss_before / 1024,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "rss_at_10pct_mib": samples[len(samples) // 10][1] / 1024 if samples else None,
        "rss_at_end_mib": samples[-1][1] / 1024 if samples else None,
        "cpu_s": cpu_s,
        "loadavg_before": load0,
        "probe": probe.summary(),
    }


# --------------------------------------------------------------------------------------------
# Child: the bare openai client, the ceiling


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


async def _bare(
    base_url: str, messages: list[list[dict[str, str]]], requests: int, concurrency: int
) -> tuple[float, int]:
    from openai import AsyncOpenAI

    from core.generation.llm import RESPONSE_FORMAT

    client = AsyncOpenAI(api_key=DUMMY_KEY, base_url=base_url, timeout=30.0, max_retries=4)
    counter = itertools.count()
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while (i := next(counter)) < requests:
            try:
                await client.chat.completions.create(
                    model=MODEL,
                    messages=messages[i % len(messages)],
                    response_format=RESPONSE_FORMAT,
                )
            except Exception:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, failures


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """AsyncOpenAI.chat.completions.create with the pipeline's messages and response format."""
    from tests.support.fake_openai import FakeOpenAI

    messages = json.loads(Path(spec["messages_file"]).read_text())
    requests, concurrency = spec["requests"], spec["concurrency"]
    with FakeOpenAI(latency_ms=spec["latency_ms"], process=True, record_bodies=False) as fake:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        fake0 = proc_cpu(fake.child_pid)
        elapsed, failures = asyncio.run(_bare(fake.base_url, messages, requests, concurrency))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        fake1 = proc_cpu(fake.child_pid)
        served = fake.stats().requests
    cpu = usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime
    return {
        "kind": "bare",
        "requests": requests,
        "served": served,
        "failures": failures,
        "latency_ms": spec["latency_ms"],
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests_per_s": (requests - failures) / elapsed,
        "client_cpu_ms_per_request": 1000 * cpu / requests,
        "server_cpu_ms_per_request": (
            1000 * (fake1 - fake0) / requests if fake0 is not None and fake1 is not None else None
        ),
        "prompt_chars": statistics.mean(sum(len(m["content"]) for m in ms) for ms in messages),
    }


# --------------------------------------------------------------------------------------------
# Child: per-lead CPU cost of each component, in isolation


def _cpu_ms_per(count: int, fn: Any, repeat: int = 3) -> float:
    """Best-of-`repeat` CPU milliseconds of fn() divided by count."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return round(1000 * best / count, 3)


def _wall_and_cpu(coro_factory: Any) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(coro_factory())
    return time.perf_counter() - started, time.process_time() - cpu


def child_micro(spec: dict[str, Any]) -> dict[str, Any]:
    """What one lead costs in the flow process, component by component (CPU ms per lead).

    Uses one batch (--batch-size leads previewed from the seeded database): prepare(), the
    quality gate, Prefect's traversal of the two big tasks' parameters (as the task engine does
    it, with and without prefect.utilities.annotations.quote), the per-lead ResultStore cache
    (a miss, then a write), plan_writes, and the openai call through OpenAIGenerator and through
    a bare AsyncOpenAI create() against the fake server.
    """
    os.environ.update(DATABASE_URL=spec["database_url"], OPENAI_API_KEY=DUMMY_KEY)
    from prefect.results import get_result_store
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.utilities.annotations import quote
    from prefect.utilities.collections import visit_collection
    from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_to_final_result

    from core.generation.gate import check_draft, normalize_draft
    from core.generation.generate import Prepared, generate_for_lead, plan_writes, prepare
    from core.generation.llm import OpenAIGenerator
    from db.engine import make_engine, make_session_factory
    from db.queries.claims import preview_due_leads
    from tasks.generation import Claim, NoCache, ResultStoreCache, generation_config
    from tests.support.fake_openai import FakeOpenAI

    engine = make_engine(spec["database_url"])
    with make_session_factory(engine)() as session:
        leads = preview_due_leads(session, as_of=AS_OF, now=AS_OF, limit=spec["batch"])
    engine.dispose()
    count = len(leads)
    out: dict[str, Any] = {"batch": count}

    out["prepare"] = _cpu_ms_per(count, lambda: [prepare(lead, model=MODEL) for lead in leads])
    prepared = [
        p for p in (prepare(lead, model=MODEL) for lead in leads) if isinstance(p, Prepared)
    ]
    apply_variant("no-llm-http")
    import tasks.generation as tg

    generator = tg.OpenAIGenerator()

    async def generate_all() -> list[Any]:
        return list(
            await asyncio.gather(
                *(generate_for_lead(p, generator, NoCache(), model=MODEL) for p in prepared)
            )
        )

    outcomes = asyncio.run(generate_all())
    drafts = [(o.generation.draft, p) for o, p in zip(outcomes, prepared, strict=True)]
    out["quality_gate"] = _cpu_ms_per(
        count,
        lambda: [
            check_draft(normalize_draft(d), rendered=p.rendered, rules=p.rules) for d, p in drafts
        ],
    )
    out["plan_writes"] = _cpu_ms_per(
        count, lambda: plan_writes(leads, outcomes, as_of=AS_OF, max_attempts=8)
    )

    # Prefect: what the task engine does with each call's parameters, twice per call.
    config = generation_config()
    calls = {
        "generate_messages": {"leads": leads, "config": config},
        "write_messages": {
            "claim": Claim(token="t", leads=leads),
            "outcomes": outcomes,
            "as_of": AS_OF,
            "max_attempts": 8,
        },
    }

    def traverse(parameters: dict[str, Any]) -> None:
        for value in parameters.values():
            collect_task_run_inputs_sync(value)
        for name, value in parameters.items():
            visit_collection(
                value,
                visit_fn=resolve_to_final_result,
                return_data=True,
                max_depth=-1,
                remove_annotations=True,
                context={"parameter_name": name},
            )

    for name, parameters in calls.items():
        quoted = {k: quote(v) if isinstance(v, list | Claim) else v for k, v in parameters.items()}
        out[f"prefect_params_{name}"] = _cpu_ms_per(count, lambda p=parameters: traverse(p))
        out[f"prefect_params_{name}_quoted"] = _cpu_ms_per(count, lambda p=quoted: traverse(p))

    # The per-lead cache: a miss (aexists) then a write, 64 at a time, as generate_for_lead does.
    results_dir = tempfile.mkdtemp(prefix="cp-bench-micro-")
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results_dir}):
        cache = ResultStoreCache(get_result_store())

        async def store_all(tag: str) -> None:
            slots = asyncio.Semaphore(spec["concurrency"])

            async def one(i: int, outcome: Any) -> None:
                async with slots:
                    key = f"{tag}-{outcome.input_hash}"
                    await cache.get(key)
                    await cache.put(key, outcome.generation)

            await asyncio.gather(*(one(i, o) for i, o in enumerate(outcomes)))

        runs = [_wall_and_cpu(lambda t=f"r{i}": store_all(t)) for i in range(3)]
        wall, cpu = min(runs, key=lambda r: r[1])
        out["result_store_get_miss_put"] = round(1000 * cpu / count, 3)
        out["result_store_wall_ms_per_lead_c64"] = round(1000 * wall / count, 3)

    # The openai call: the pipeline's generator against a bare create(), same messages.
    requests = spec["requests"]
    messages = [p.messages() for p in prepared]
    with FakeOpenAI(latency_ms=0, process=True, record_bodies=False) as fake:

        async def via_generator() -> None:
            real = OpenAIGenerator(api_key=DUMMY_KEY, base_url=fake.base_url, timeout=30)
            limit = asyncio.Semaphore(spec["concurrency"])

            async def one(i: int) -> None:
                async with limit:
                    await real.generate(messages[i % len(messages)], model=MODEL)

            await asyncio.gather(*(one(i) for i in range(requests)))
            await real.aclose()

        asyncio.run(_bare(fake.base_url, messages, 500, spec["concurrency"]))  # warm-up
        bare_wall, bare_cpu = _wall_and_cpu(
            lambda: _bare(fake.base_url, messages, requests, spec["concurrency"])
        )
        gen_wall, gen_cpu = _wall_and_cpu(via_generator)
    out["openai_bare_create"] = round(1000 * bare_cpu / requests, 3)
    out["openai_bare_create_req_per_s"] = round(requests / bare_wall)
    out["openai_via_OpenAIGenerator"] = round(1000 * gen_cpu / requests, 3)
    out["openai_via_OpenAIGenerator_req_per_s"] = round(requests / gen_wall)
    return {"kind": "micro", "cpu_ms_per_lead": out}


# --------------------------------------------------------------------------------------------
# Parent: orchestration


class Bench:
    # The script whose --child-<mode> entry each child runs; benchmarks/baseline.py subclasses
    # Bench and points this at itself.
    child_script = Path(__file__).resolve()

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin_url = server_url()
        self.db_name = f"cp_bench_{os.getpid()}"
        self.url = ""
        self.prefect_api_url = ""
        self.prefect_server_pid: int | None = None
        self.postmaster_pid: int | None = None
        self.messages_file: Path | None = None
        self.logs = Path(tempfile.mkdtemp(prefix="cp-bench-logs-"))
        self.results: dict[str, Any] = {"as_of": AS_OF.isoformat(), "runs": []}

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def settle(self, limit_s: float = 60.0) -> float:
        """Wait until the machine is quiet (the harness API server ingests the previous run's
        events and logs for a while after it ends); returns the seconds waited."""
        started = time.perf_counter()
        quiet = 0
        while quiet < 2 and time.perf_counter() - started < limit_s:
            busy0, total0 = machine_jiffies()
            time.sleep(0.5)
            busy1, total1 = machine_jiffies()
            quiet = quiet + 1 if (busy1 - busy0) < 0.2 * max(total1 - total0, 1) else 0
        return time.perf_counter() - started

    def child(self, mode: str, spec: dict[str, Any], *, profile: Path | None = None) -> dict:
        return self.children(mode, [spec], profile=profile)[0]

    def children(
        self, mode: str, specs: list[dict[str, Any]], *, profile: Path | None = None
    ) -> list[dict[str, Any]]:
        """Run one child per spec, all at once; each prints its result as one JSON line."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        }
        settled = self.settle()
        started = []
        for k, spec in enumerate(specs):
            argv = [sys.executable, str(self.child_script), f"--child-{mode}"]
            argv.append(json.dumps(spec))
            if profile is not None:
                spy = Path(sys.executable).with_name("py-spy")
                rate = str(self.args.py_spy_rate)
                argv = [str(spy), "record", "--format", "raw", "--rate", rate, "--nonblocking"]
                argv += ["--idle", "--threads", "-o", str(profile), "--", sys.executable]
                argv += [str(self.child_script), f"--child-{mode}", json.dumps(spec)]
            log = self.logs / f"{mode}-{len(self.results['runs'])}-{k}.log"
            err = log.open("w")
            process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
            started.append((process, log, err))
        results = []
        for process, log, err in started:
            out = process.communicate()[0].decode()
            err.close()
            lines = [line for line in out.splitlines() if line.startswith(RESULT_MARKER)]
            if process.returncode != 0 or not lines:
                tail = "\n".join(log.read_text().splitlines()[-40:])
                raise RuntimeError(f"{mode} child failed ({process.returncode}); {log}:\n{tail}")
            result = json.loads(lines[-1][len(RESULT_MARKER) :])
            result["settle_seconds"] = round(settled, 1)
            if mode != "micro":
                self.results["runs"].append(result)
            results.append(result)
        return results

    def flow_run(
        self,
        n: int,
        latency_ms: float,
        label: str,
        *,
        profile: Path | None = None,
        variant: str = "baseline",
    ):
        seeded = seed_due_leads(self.url, n)
        spec = {
            "database_url": self.url,
            "n": n,
            "latency_ms": latency_ms,
            "concurrency": self.args.concurrency,
            "batch_size": self.args.batch_size,
            "variant": variant,
            "prefect_server_pid": self.prefect_server_pid,
            "postmaster_pid": self.postmaster_pid,
        }
        result = self.child("flow", spec, profile=profile)
        result["label"] = label
        result["seed_seconds"] = seeded
        result["verified"] = verify_run(self.url, n)
        result["llm_latency_ms"] = llm_latency_ms(self.url)
        ok = (
            result["counts"]["scheduled"] == n
            and result["counts"]["cache_hits"] == 0
            and result["verified"]["llm_messages"] == n
            and (result["llm_requests"] == n or "no-llm-http" in variant)
        )
        result["complete"] = ok
        probe = result["probe"]["lead_claim_to_write_s"]
        self.log(
            f"{label}: {n} leads in {result['seconds']:.1f} s = {result['leads_per_s']:.0f}/s, "
            f"lead p50 {probe['p50'] or 0:.2f} s p95 {probe['p95'] or 0:.2f} s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB, cpu {result['cpu_s']}"
            + ("" if ok else f"  INCOMPLETE: {result['counts']} {result['verified']}")
        )
        return result

    def bare_run(self, latency_ms: float, requests: int, label: str) -> dict[str, Any]:
        if self.messages_file is None:
            # The exact messages the pipeline sends, taken from freshly seeded leads once.
            seed_due_leads(self.url, 500)
            self.messages_file = self.logs / "messages.json"
            self.messages_file.write_text(json.dumps(sample_messages(self.url, 500)))
        spec = {
            "messages_file": str(self.messages_file),
            "latency_ms": latency_ms,
            "requests": requests,
            "concurrency": self.args.concurrency,
        }
        result = self.child("bare", spec)
        result["label"] = label
        self.log(
            f"{label}: {result['requests_per_s']:.0f} req/s, client "
            f"{result['client_cpu_ms_per_request']:.2f} ms CPU/req, {result['failures']} failed"
        )
        return result

    # ---- the five measurements

    def throughput(self) -> None:
        """Targets 1 and 2: 0 ms LLM at --n, and the bare client, interleaved."""
        n, runs = self.args.n, self.args.runs
        if self.args.bare_requests:
            self.bare_run(0, min(1000, self.args.bare_requests), "bare warm-up (discarded)")
            self.results["runs"][-1]["label"] = "warmup"
        for i in range(runs):
            self.flow_run(n, 0, f"pipeline 0ms n={n} #{i + 1}")
            if self.args.bare_requests:
                self.bare_run(0, self.args.bare_requests, f"bare 0ms #{i + 1}")

    def slow(self) -> None:
        """Target 3: 300 ms LLM, concurrency 64, against the ideal concurrency/latency."""
        n, latency = self.args.slow_n, self.args.slow_latency_ms
        for i in range(self.args.slow_runs):
            self.flow_run(n, latency, f"pipeline {latency:g}ms n={n} #{i + 1}")
            if self.args.bare_requests:
                requests = min(self.args.bare_requests, n)
                self.bare_run(latency, requests, f"bare {latency:g}ms #{i + 1}")

    def rss(self) -> None:
        """Target 4: peak RSS at --big-n against --n (the --n figures come from throughput)."""
        n, variant = self.args.big_n, self.args.big_variant
        for i in range(self.args.big_runs):
            self.flow_run(n, 0, f"{variant} 0ms n={n} #{i + 1}", variant=variant)

    def parallel(self) -> None:
        """What-if: two flow runs at once over the same --n due leads (the claims keep them
        apart), 0 ms LLM; the figure is all leads over first start to last finish."""
        n = self.args.n
        for i in range(self.args.variant_runs):
            seed_due_leads(self.url, n)
            spec = {
                "database_url": self.url,
                "n": n,
                "latency_ms": 0,
                "concurrency": self.args.concurrency,
                "batch_size": self.args.batch_size,
                "variant": "baseline",
                "start_at": time.time() + 25,
            }
            pair = self.children("flow", [spec, spec])
            span = max(r["ended_epoch"] for r in pair) - min(r["started_epoch"] for r in pair)
            scheduled = sum(r["counts"]["scheduled"] for r in pair)
            verified = verify_run(self.url, n)
            for r in pair:
                r["label"] = f"parallel-2 0ms n={n} #{i + 1}"
                r["variant"] = "parallel-2"
            self.results.setdefault("parallel", []).append(
                {
                    "leads_per_s": scheduled / span,
                    "seconds": span,
                    "scheduled": scheduled,
                    "per_run": [r["counts"]["scheduled"] for r in pair],
                    "verified": verified,
                    "complete": verified["llm_messages"] == n and scheduled == n,
                }
            )
            self.log(
                f"two runs at once: {scheduled} leads in {span:.1f} s = {scheduled / span:.0f}/s"
                f" (split {[r['counts']['scheduled'] for r in pair]})"
            )

    def micro(self) -> None:
        """Per-lead CPU of each component in isolation (bottleneck analysis)."""
        seed_due_leads(self.url, self.args.batch_size)
        spec = {
            "database_url": self.url,
            "batch": self.args.batch_size,
            "concurrency": self.args.concurrency,
            "requests": 3000,
        }
        result = self.child("micro", spec)
        self.results["micro"] = result["cpu_ms_per_lead"]
        self.log(f"micro: {result['cpu_ms_per_lead']}")

    def variants(self) -> None:
        """What-if runs at --n, 0 ms: which change would buy how much (bottleneck analysis)."""
        for i in range(self.args.variant_runs):
            for variant in VARIANTS[1:]:
                self.flow_run(
                    self.args.n, 0, f"{variant} 0ms n={self.args.n} #{i + 1}", variant=variant
                )

    def profile(self) -> None:
        """One extra 0 ms run under py-spy (raw collapsed stacks), summarised by component."""
        out = Path(self.args.py_spy).resolve()
        out.mkdir(parents=True, exist_ok=True)
        n = self.args.py_spy_n
        self.results["profiles"] = {}
        for variant in self.args.py_spy_variant or ["baseline"]:
            raw = out / f"flow-{variant}-{n}.txt"
            label = f"{variant} 0ms n={n} under py-spy"
            self.flow_run(n, 0, label, profile=raw, variant=variant)
            self.results["runs"][-1]["label"] = "profiled"
            self.results["profiles"][variant] = summarise_profile(raw)
            self.results["profiles"][variant]["file"] = str(raw)

    def claim(self) -> None:
        """Target 5: EXPLAIN ANALYZE of CLAIM_DUE_LEADS, batch 500, with --claim-rows rows."""
        self.log(f"seeding {self.args.claim_rows:,} CampaignLeads ...")
        seconds, due = seed_million(self.url, self.args.claim_rows, self.args.claim_campaigns)
        self.log(f"seeded in {seconds:.0f} s, {due} due")
        self.results["claim"] = explain_claim(self.url, self.args.claim_runs, self.args.batch_size)
        self.results["claim"].update(rows=self.args.claim_rows, due=due, seed_seconds=seconds)
        c = self.results["claim"]
        self.log(
            f"claim: execution median {c['execution_ms_median']:.2f} ms "
            f"(planning {c['planning_ms_median']:.2f} ms), claim_due_leads() median "
            f"{c['function_ms_median']:.2f} ms over {c['runs']} runs"
        )
        if self.args.claim_what_if:
            self.claim_what_if()

    def claim_what_if(self) -> None:
        """Schema what-ifs on this throwaway database only (never a migration): HOT updates
        (fillfactor 80), an index matching the claim's ORDER BY, and a session without bitmap
        scans; each measured like the claim itself."""
        runs, batch = self.args.claim_runs, self.args.batch_size

        def sql(statement: str) -> None:
            with psycopg.connect(libpq(self.url), autocommit=True) as conn:
                conn.execute(statement)

        index = (
            'CREATE INDEX bench_due_order_idx ON "CampaignLead" ("nextScheduledDate", id) '
            """WHERE status = 'active' AND "nextScheduledDate" IS NOT NULL"""
        )
        no_bitmap = make_url(self.url).update_query_dict({"options": "-c enable_bitmapscan=off"})
        steps = (
            ("as seeded, after VACUUM", ['VACUUM ANALYZE "CampaignLead"'], self.url),
            (
                "fillfactor 80 (HOT updates)",
                [
                    'ALTER TABLE "CampaignLead" SET (fillfactor = 80)',
                    'VACUUM FULL ANALYZE "CampaignLead"',
                ],
                self.url,
            ),
            (
                "+ index (nextScheduledDate, id) WHERE active",
                [index, 'VACUUM ANALYZE "CampaignLead"'],
                self.url,
            ),
            (
                "+ enable_bitmapscan = off (session)",
                ['VACUUM ANALYZE "CampaignLead"'],
                no_bitmap.render_as_string(hide_password=False),
            ),
        )
        found = []
        for label, statements, url in steps:
            for statement in statements:
                sql(statement)
            result = explain_claim(url, runs, batch)
            found.append(
                {
                    "what_if": label,
                    "execution_ms_median": result["execution_ms_median"],
                    "execution_ms": result["execution_ms"],
                    "function_ms_median": result["function_ms_median"],
                    "plan": result["plan"],
                }
            )
            self.log(
                f"claim what-if {label}: execution median {result['execution_ms_median']:.1f} ms,"
                f" claim_due_leads() {result['function_ms_median']:.1f} ms"
            )
        self.results["claim_what_if"] = found

    # ---- driver

    def run(self) -> dict[str, Any]:
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        self.url = create_database(self.admin_url, self.db_name)
        try:
            from db.engine import upgrade

            upgrade(self.url)
            version, self.postmaster_pid = server_facts(self.url)
            self.results["machine"] = machine_info(version)
            self.results["database"] = make_url(self.url).render_as_string(hide_password=True)
            self.log(f"database {self.results['database']} (PostgreSQL {version})")
            with prefect_test_harness(server_startup_timeout=90):
                self.prefect_api_url = PREFECT_API_URL.value()
                server = SubprocessASGIServer._instances.get(None)
                process = getattr(server, "server_process", None)
                self.prefect_server_pid = process.pid if process is not None else None
                self.log(f"Prefect harness at {self.prefect_api_url}; child logs in {self.logs}")
                parts = self.args.only or ["throughput", "slow", "rss", "claim"]
                if self.args.variants:
                    extra = ("variants", "parallel", "micro")
                    parts = [*parts, *(p for p in extra if p not in parts)]
                if self.args.py_spy:
                    parts = [*parts, "profile"]
                for part in parts:
                    getattr(self, part)()
        finally:
            if not self.args.keep_db:
                drop_database(self.admin_url, self.db_name)
        self.results["summary"] = summarise(self.results, self.args)
        return self.results


# --------------------------------------------------------------------------------------------
# The claim at a million rows


def explain_claim(url: str, runs: int, batch: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement claim_due_leads() sends, rolled back each time.

    The statement and its parameters are captured from a real claim_due_leads() call, so the
    plan is that of the SQL the pipeline runs. Each run is its own transaction, rolled back, so
    every run claims the same 500 oldest due rows. Also times claim_due_leads() itself (query,
    fetch and DueLead validation) the same way, on one connection, as a worker reuses one.
    """
    from sqlalchemy.orm import Session

    from db.engine import make_engine
    from db.queries.claims import claim_due_leads

    engine = make_engine(url)
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        if "SKIP LOCKED" in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    def claim(session: Session) -> int:
        _, leads = claim_due_leads(
            session,
            as_of=AS_OF,
            now=datetime.now(UTC),
            limit=batch,
            worker="bench",
            lease=timedelta(minutes=10),
        )
        return len(leads)

    function_ms: list[float] = []
    claimed = 0
    with Session(engine) as session:
        for _ in range(runs + 1):  # the first run warms the cache and is discarded
            with session.begin():
                started = time.perf_counter()
                claimed = claim(session)
                function_ms.append(1000 * (time.perf_counter() - started))
                session.rollback()
    statement, params = captured[0]
    plans: list[str] = []
    execution: list[float] = []
    planning: list[float] = []
    with engine.connect() as conn:
        for _ in range(runs + 1):
            with conn.begin() as tx:
                rows = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                ).scalars()
                plan = "\n".join(rows)
                tx.rollback()
            plans.append(plan)
            execution.append(float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1)))
            planning.append(float(re.search(r"Planning Time: ([\d.]+) ms", plan).group(1)))
    engine.dispose()
    execution, planning, function_ms = execution[1:], planning[1:], function_ms[1:]
    middle = sorted(range(runs), key=lambda i: execution[i])[runs // 2]
    return {
        "runs": runs,
        "batch": batch,
        "claimed": claimed,
        "execution_ms": execution,
        "execution_ms_median": statistics.median(execution),
        "planning_ms": planning,
        "planning_ms_median": statistics.median(planning),
        "function_ms": function_ms,
        "function_ms_median": statistics.median(function_ms),
        "plan": plans[1:][middle],
        "statement": statement,
    }


# --------------------------------------------------------------------------------------------
# Profiles

# Where CPU goes: the innermost frame that belongs to a library or to this project names the
# component (stdlib frames such as json, re or ssl count for the library that called them).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("(openai/", "openai client (build request, parse response)"),
    ("(httpx2/", "httpx2/httpcore2 (HTTP)"),
    ("(httpcore2/", "httpx2/httpcore2 (HTTP)"),
    ("(httpx/", "httpx2/httpcore2 (HTTP)"),
    ("(httpcore/", "httpx2/httpcore2 (HTTP)"),
    ("(h11/", "httpx2/httpcore2 (HTTP)"),
    ("(anyio/", "anyio (HTTP and thread glue)"),
    ("(prefect/results.py", "prefect result store (per-lead cache)"),
    ("(prefect/filesystems.py", "prefect result store (per-lead cache)"),
    ("(prefect/serializers.py", "prefect result store (per-lead cache)"),
    ("(prefect/utilities/collections.py", "prefect visit_collection (task inputs/outputs)"),
    ("(prefect/", "prefect other (engine, states, events, logs)"),
    ("(sqlalchemy/", "sqlalchemy"),
    ("(psycopg", "psycopg"),
    ("(pydantic", "pydantic"),
    ("(pydantic_core", "pydantic"),
    ("(email_validator/", "email_validator"),
    ("(core/", "project core/ (prepare, render, prompt, gate)"),
    ("(db/", "project db/ tasks/ flows/"),
    ("(tasks/", "project db/ tasks/ flows/"),
    ("(flows/", "project db/ tasks/ flows/"),
    ("<frozen importlib", "imports"),
)
# Leaf frames of a thread that is waiting, not running.
IDLE_LEAVES = (
    "EpollSelector.select (",
    "Condition.wait (",
    "_worker (concurrent/futures/thread.py",
    "WorkerThread.run (anyio/",
    "heartbeat_loop (",
    "Popen._wait (",
    "Event.wait (",
)
# Functions whose inclusive share of the flow's main-thread samples is reported.
INCLUSIVE = (
    ("OpenAIGenerator.generate (", "OpenAIGenerator.generate (whole openai call)"),
    ("ResultStoreCache.get (", "ResultStoreCache.get (cache lookup, a miss)"),
    ("ResultStoreCache.put (", "ResultStoreCache.put (per-lead result write)"),
    (
        "prepare (core/generation/generate.py",
        "core.generation.generate.prepare (render, prompt, hash)",
    ),
    ("check_draft (core/generation/gate.py", "core.generation.gate.check_draft"),
    ("validate_email (", "email_validator.validate_email (in prepare)"),
    ("render_draft (", "core.generation.draft.render_draft (in prepare)"),
    ("build_messages (", "core.generation.prompt.build_messages"),
    ("generation_input_hash (", "core.generation.prompt.generation_input_hash (in prepare)"),
    ("plan_writes (", "core.generation.generate.plan_writes"),
    ("collect_task_run_inputs", "prefect collect_task_run_inputs (task graph inputs)"),
    ("_resolve_parameters (", "prefect _resolve_parameters (task parameters)"),
    ("(logging/", "logging (incl. Prefect's API log handler)"),
    ("visit_collection (prefect/", "prefect visit_collection (task inputs/outputs)"),
    ("(prefect/task_engine.py", "prefect task engine (any frame)"),
    ("write_messages (", "write-messages task body"),
    ("_publish_counts (", "artifacts"),
)


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, name in COMPONENTS:
            if needle in frame:
                return name
    if any("(asyncio/" in frame or "(selectors.py" in frame for frame in frames):
        return "asyncio event loop"
    return "other (stdlib)"


def summarise_profile(raw: Path) -> dict[str, Any]:
    """Shares of py-spy samples (raw format, --threads --idle) during the flow run.

    Main thread: only samples inside the flow's asyncio.run (stacks through run_until_complete),
    split into idle (waiting in epoll) and busy, busy by component and by a few inclusive
    functions. Other threads: busy samples per thread kind, to show what competes for the GIL.
    """
    main: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    waiting_on_db = 0
    main_total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else "unnamed"
        idle = any(leaf in frames[-1] for leaf in IDLE_LEAVES)
        if thread == "MainThread":
            if not any("run_until_complete" in frame for frame in frames):
                continue  # imports and fake-server start/stop, before and after the flow
            main_total += count
            name = "idle (event loop waiting in epoll)" if idle else _component(frames)
            main[name] = main.get(name, 0) + count
            if not idle:
                for marker, label in INCLUSIVE:
                    if any(marker in frame for frame in frames):
                        inclusive[label] = inclusive.get(label, 0) + count
        elif not idle:
            if "Connection.wait (psycopg" in frames[-1]:
                waiting_on_db += count
                continue
            kind = re.sub(r"[\s_-]*\d+$", "", thread.split(" (")[0])
            threads[kind] = threads.get(kind, 0) + count

    def shares(counts: dict[str, int]) -> dict[str, float]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])
        return {name: round(100 * c / max(main_total, 1), 1) for name, c in ordered}

    return {
        "main_thread_flow_samples": main_total,
        "note": "percentages are of the main thread's samples during the flow run",
        "main_thread_pct": shares(main),
        "main_thread_inclusive_pct": shares(inclusive),
        "other_threads_busy_pct": shares(threads),
        "db_wait_pct": round(100 * waiting_on_db / max(main_total, 1), 1),
    }


# --------------------------------------------------------------------------------------------
# Summary and table


def summarise(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = [r for r in results["runs"] if r.get("label") not in ("warmup", "profiled")]

    def flows(n: int, latency: float) -> list[dict[str, Any]]:
        return [
            r
            for r in runs
            if r["kind"] == "flow"
            and r["n"] == n
            and r["latency_ms"] == latency
            and r.get("variant", "baseline") == "baseline"
        ]

    def bares(latency: float) -> list[dict[str, Any]]:
        return [r for r in runs if r["kind"] == "bare" and r["latency_ms"] == latency]

    rows: list[dict[str, Any]] = []
    fast = flows(args.n, 0)
    if fast:
        rate = median([r["leads_per_s"] for r in fast])
        rows.append(
            {
                "target": f"end to end, 0 ms LLM, n={args.n:,}, c={args.concurrency}",
                "goal": ">= 500 leads/s",
                "figure": f"{rate:.0f} leads/s",
                "runs": len(fast),
                "all": [round(r["leads_per_s"]) for r in fast],
                "pass": rate >= 500 and all(r["complete"] for r in fast),
            }
        )
        p50 = median([r["probe"]["lead_claim_to_write_s"]["p50"] for r in fast])
        p95 = median([r["probe"]["lead_claim_to_write_s"]["p95"] for r in fast])
        rows.append(
            {
                "target": "per-lead latency, claim commit -> write commit (info)",
                "goal": "-",
                "figure": f"p50 {p50:.2f} s, p95 {p95:.2f} s",
                "runs": len(fast),
                "all": [round(r["probe"]["lead_claim_to_write_s"]["p50"], 2) for r in fast if r],
                "pass": None,
            }
        )
        bare = bares(0)
        if bare:
            ceiling = median([r["requests_per_s"] for r in bare])
            rows.append(
                {
                    "target": f"pipeline / bare AsyncOpenAI create(), 0 ms, c={args.concurrency}",
                    "goal": ">= 70%",
                    "figure": f"{100 * rate / ceiling:.0f}% ({rate:.0f} / {ceiling:.0f} req/s)",
                    "runs": f"{len(fast)} + {len(bare)}",
                    "all": [round(r["requests_per_s"]) for r in bare],
                    "pass": rate / ceiling >= 0.7,
                }
            )
    slow = flows(args.slow_n, args.slow_latency_ms)
    if slow:
        ideal = args.concurrency / (args.slow_latency_ms / 1000)
        rate = median([r["leads_per_s"] for r in slow])
        steady = median([r["probe"]["steady_leads"] / r["probe"]["steady_seconds"] for r in slow])
        rows.append(
            {
                "target": (
                    f"{args.slow_latency_ms:g} ms LLM, c={args.concurrency}, n={args.slow_n:,}"
                    f" vs ideal {ideal:.1f}/s"
                ),
                "goal": ">= 90% of ideal",
                "figure": (
                    f"{100 * rate / ideal:.0f}% ({rate:.0f}/s; first claim -> last write "
                    f"{steady:.0f}/s = {100 * steady / ideal:.0f}%)"
                ),
                "runs": len(slow),
                "all": [round(r["leads_per_s"]) for r in slow],
                "pass": rate / ideal >= 0.9 and all(r["complete"] for r in slow),
            }
        )
        bare = bares(args.slow_latency_ms)
        if bare:
            ceiling = median([r["requests_per_s"] for r in bare])
            rows.append(
                {
                    "target": f"bare AsyncOpenAI at {args.slow_latency_ms:g} ms (info)",
                    "goal": "-",
                    "figure": f"{ceiling:.0f} req/s = {100 * ceiling / ideal:.0f}% of ideal",
                    "runs": len(bare),
                    "all": [round(r["requests_per_s"]) for r in bare],
                    "pass": None,
                }
            )
    big = flows(args.big_n, 0)
    if big and fast:
        small_rss = median([r["peak_rss_mib"] for r in fast])
        big_rss = median([r["peak_rss_mib"] for r in big])
        growth = 100 * (big_rss / small_rss - 1)
        rows.append(
            {
                "target": f"peak RSS n={args.big_n:,} vs n={args.n:,}",
                "goal": "within 20%",
                "figure": f"{big_rss:.0f} vs {small_rss:.0f} MiB ({growth:+.0f}%)",
                "runs": f"{len(big)} + {len(fast)}",
                "all": [round(r["peak_rss_mib"]) for r in big],
                "pass": big_rss <= 1.2 * small_rss,
            }
        )
        rows.append(
            {
                "target": f"end to end, 0 ms LLM, n={args.big_n:,} (info)",
                "goal": "-",
                "figure": (
                    f"{median([r['leads_per_s'] for r in big]):.0f} leads/s, "
                    f"{median([r['seconds'] for r in big]):.0f} s"
                ),
                "runs": len(big),
                "all": [round(r["leads_per_s"]) for r in big],
                "pass": None,
            }
        )
    for variant in VARIANTS[1:]:
        what_if = [
            r
            for r in runs
            if r["kind"] == "flow" and r.get("variant") == variant and r["n"] == args.n
        ]
        if what_if:
            rate = median([r["leads_per_s"] for r in what_if])
            cpu = median([1000 * r["cpu_s"]["flow_process"] / r["n"] for r in what_if])
            rows.append(
                {
                    "target": f"what-if {variant}, 0 ms, n={args.n:,} (info)",
                    "goal": "-",
                    "figure": f"{rate:.0f} leads/s, flow CPU {cpu:.1f} ms/lead",
                    "runs": len(what_if),
                    "all": [round(r["leads_per_s"]) for r in what_if],
                    "pass": None,
                }
            )
    if results.get("parallel"):
        pair = results["parallel"]
        rate = median([p["leads_per_s"] for p in pair])
        rows.append(
            {
                "target": f"what-if two flow runs at once, 0 ms, n={args.n:,} (info)",
                "goal": "-",
                "figure": f"{rate:.0f} leads/s together",
                "runs": len(pair),
                "all": [round(p["leads_per_s"]) for p in pair],
                "pass": None,
            }
        )
    claim = results.get("claim")
    if claim:
        rows.append(
            {
                "target": f"claim of {claim['batch']} with {claim['rows']:,} CampaignLeads",
                "goal": "< 10 ms",
                "figure": (
                    f"{claim['execution_ms_median']:.2f} ms execution "
                    f"(+{claim['planning_ms_median']:.2f} ms planning; "
                    f"claim_due_leads() {claim['function_ms_median']:.1f} ms)"
                ),
                "runs": claim["runs"],
                "all": [round(v, 2) for v in claim["execution_ms"]],
                "pass": claim["execution_ms_median"] < 10,
            }
        )
    for what_if in results.get("claim_what_if", []):
        rows.append(
            {
                "target": f"claim what-if: {what_if['what_if']} (info)",
                "goal": "-",
                "figure": f"{what_if['execution_ms_median']:.2f} ms execution",
                "runs": len(what_if["execution_ms"]),
                "all": [round(v, 2) for v in what_if["execution_ms"]],
                "pass": None,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ("target", "goal", "median", "runs", "pass")
    table = [
        (
            r["target"],
            r["goal"],
            r["figure"],
            str(r["runs"]),
            {True: "PASS", False: "FAIL", None: ""}[r["pass"]],
        )
        for r in rows
    ]
    widths = [max([len(h), *(len(row[i]) for row in table)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="leads per 0 ms run (10,000)")
    parser.add_argument("--runs", type=int, default=3, help="repeats of each measurement (3)")
    parser.add_argument("--concurrency", type=int, default=64, help="LLM_MAX_CONCURRENCY (64)")
    parser.add_argument("--batch-size", type=int, default=500, help="flow batch_size (500)")
    parser.add_argument(
        "--bare-requests", type=int, default=10_000, help="requests per bare-client run; 0 = skip"
    )
    parser.add_argument("--slow-n", type=int, default=3_000, help="leads per slow-LLM run")
    parser.add_argument("--slow-latency-ms", type=float, default=300.0)
    parser.add_argument("--slow-runs", type=int, default=3)
    parser.add_argument("--big-n", type=int, default=100_000, help="leads for the RSS run")
    parser.add_argument("--big-runs", type=int, default=1)
    parser.add_argument(
        "--big-variant", choices=VARIANTS, default="baseline", help="what-if for the RSS run"
    )
    parser.add_argument("--claim-rows", type=int, default=1_000_000)
    parser.add_argument("--claim-campaigns", type=int, default=1_000)
    parser.add_argument("--claim-runs", type=int, default=9)
    parser.add_argument(
        "--claim-what-if",
        action="store_true",
        help="after the claim, try fillfactor 80, an ORDER BY index, no bitmap scans",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["throughput", "slow", "rss", "claim", "variants", "micro", "parallel"],
        help="run only these parts (repeatable); default all but variants",
    )
    parser.add_argument(
        "--py-spy", metavar="DIR", help="also profile one 0 ms run with py-spy into DIR"
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run the what-ifs at --n (no result store, no LLM HTTP, two runs at once)"
        " and the per-component CPU costs",
    )
    parser.add_argument("--variant-runs", type=int, default=2, help="repeats of each what-if")
    parser.add_argument("--py-spy-n", type=int, default=3_000, help="leads in the profiled run")
    parser.add_argument(
        "--py-spy-variant", action="append", choices=VARIANTS, help="variants to profile"
    )
    parser.add_argument("--py-spy-rate", type=int, default=50, help="py-spy samples/s")
    parser.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--child-flow", help=argparse.SUPPRESS)
    parser.add_argument("--child-bare", help=argparse.SUPPRESS)
    parser.add_argument("--child-micro", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_flow:
        print(RESULT_MARKER + json.dumps(child_flow(json.loads(args.child_flow))), flush=True)
        return
    if args.child_micro:
        print(RESULT_MARKER + json.dumps(child_micro(json.loads(args.child_micro))), flush=True)
        return
    if args.child_bare:
        print(RESULT_MARKER + json.dumps(child_bare(json.loads(args.child_bare))), flush=True)
        return
    # A plain `kill` still drops the database and stops the harness (finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # No telemetry from the harness's API server: the machine has only loopback network.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    started = time.perf_counter()
    results = Bench(args).run()
    results["wall_seconds"] = time.perf_counter() - started
    results["argv"] = sys.argv
    print()
    print_table(results["summary"])
    for variant, profile in results.get("profiles", {}).items():
        print(f"\npy-spy {variant}: main-thread samples during the flow, by component (%)")
        for name, pct in profile["main_thread_pct"].items():
            print(f"  {pct:5.1f}  {name}")
        print("  inclusive:")
        for name, pct in profile["main_thread_inclusive_pct"].items():
            print(f"  {pct:5.1f}  {name}")
        print("  other threads, busy, as % of main-thread samples:")
        for name, pct in profile["other_threads_busy_pct"].items():
            print(f"  {pct:5.1f}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
