"""A measured `process-campaign-sends` run, in its child process: the probe around the task's
database work, the what-if variants, and the run itself."""

from __future__ import annotations

import array
import asyncio
import os
import tempfile
import threading
import time
from typing import Any

from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from benchmarks import dependencies as deps
from benchmarks.generation_setup import AS_OF, DUMMY_KEY, MODEL, VARIANTS
from benchmarks.harness.machine import (
    CPUMeter,
    RssSampler,
    loadavg,
    median,
    peak_rss_kib,
    percentile,
    rss_now_kib,
)
from benchmarks.harness.servers import fake_openai
from core.generation.draft import EmailDraft
from core.generation.llm import Generation
from core.generation.prompt import extract_draft
from core.settings import Settings
from db.engine import DatabaseConfig, sessions_for
from tests.support.openai_wire import PERSONAL_LINE


class Probe:
    """Timestamps around the flow's database work and each lead's generation, from outside.

    Wraps the names tasks.generation calls (the claim query, the unit of work, the writes and
    generate_for_lead: benchmarks/dependencies.py); the code under test is unchanged. Per batch
    it keeps the claim commit, the write commit and how long each transaction took; per lead,
    the time from its batch's claim commit to its own generation finishing (a float array, 8
    bytes a lead, so it barely moves peak RSS).
    """

    def __init__(self) -> None:
        self.local = threading.local()
        self.claims: dict[str, tuple[float, int, float]] = {}  # token -> (commit, leads, seconds)
        self.writes: dict[str, tuple[float, float]] = {}  # token -> (commit, seconds)
        self.lead_claimed: dict[str, float] = {}  # in-flight leads only
        self.generated = array.array("d")

    def install(self) -> None:
        claim_query, record = deps.GENERATION_CLAIM.original(), deps.GENERATION_RECORD.original()
        hold, transaction = deps.GENERATION_HOLD.original(), deps.GENERATION_TRANSACTION.original()
        generate_for_lead = deps.GENERATION_PER_LEAD.original()
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

        def transaction_wrapper(database, work, *, rollback=False):
            probe.local.pending = None
            started = time.perf_counter()
            outcome = transaction(database, work, rollback=rollback)
            probe.committed(started, time.perf_counter())  # after COMMIT
            return outcome

        async def generate_wrapper(prepared, generator, cache, *, model):
            outcome = await generate_for_lead(prepared, generator, cache, model=model)
            claimed = probe.lead_claimed.get(prepared.lead.campaignLeadId)
            if claimed is not None:
                probe.generated.append(time.perf_counter() - claimed)
            return outcome

        deps.GENERATION_CLAIM.replace(claim_wrapper)
        deps.GENERATION_RECORD.replace(record_wrapper)
        deps.GENERATION_HOLD.replace(hold_wrapper)
        deps.GENERATION_TRANSACTION.replace(transaction_wrapper)
        deps.GENERATION_PER_LEAD.replace(generate_wrapper)

    def committed(self, started: float, done: float) -> None:
        """A unit of work committed: if it claimed or wrote a batch, note when and how long."""
        pending, self.local.pending = self.local.pending, None
        if pending is None:
            return
        kind, token, ids = pending
        if kind == "claim":
            self.claims[token] = (done, len(ids), done - started)
            for lead_id in ids:
                self.lead_claimed[lead_id] = done
        else:
            self.writes[token] = (done, done - started)
            for lead_id in ids:
                self.lead_claimed.pop(lead_id, None)

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


class InProcessGenerator:
    """Answers like the fake server (draft plus one sentence) without any HTTP or openai client."""

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


def apply_variant(variant: str) -> None:
    """What-if runs for the bottleneck analysis; `baseline` is the code as it is.

    no-result-store: the per-lead cache is core.generation.generate.NoCache (no ResultStore reads or
    writes). no-llm-http: OpenAIGenerator is replaced by InProcessGenerator.
    """
    if variant not in VARIANTS:
        raise ValueError(variant)
    if "no-result-store" in variant:
        deps.GENERATION_CACHE.replace(lambda store: deps.NoCache())
    if "no-llm-http" in variant:
        deps.GENERATION_CLIENT.replace(InProcessGenerator)


def child_flow(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured flow run; spec comes from the parent as JSON."""
    os.environ.update(
        DATABASE_URL=spec["database_url"],
        OPENAI_API_KEY=DUMMY_KEY,
        OPENAI_MODEL=MODEL,
        LLM_MAX_CONCURRENCY=str(spec["concurrency"]),
    )
    os.environ.pop("LLM_RATE_LIMIT_NAME", None)
    probe = Probe()
    probe.install()
    apply_variant(spec.get("variant", "baseline"))
    results_dir = tempfile.mkdtemp(prefix="cp-bench-results-")
    n = spec["n"]
    with fake_openai(spec["latency_ms"]) as fake:
        os.environ["OPENAI_BASE_URL"] = fake.base_url
        # Connect and check the revision before the clock starts, as the flow will.
        sessions_for(DatabaseConfig.from_settings(Settings()))
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results_dir}):
            rss_before = rss_now_kib()
            meter = CPUMeter(
                {"fake_openai": fake.child_pid, "prefect_api": spec.get("prefect_server_pid")},
                spec.get("postmaster_pid"),
            )
            load0 = loadavg()
            if spec.get("start_at"):
                time.sleep(max(0.0, spec["start_at"] - time.time()))
            started_epoch = time.time()
            started = time.perf_counter()
            with RssSampler() as sampler:
                counts = asyncio.run(
                    deps.process_campaign_sends(
                        as_of=AS_OF, batch_size=spec["batch_size"], max_leads=n
                    )
                )
            elapsed = time.perf_counter() - started
            ended_epoch = time.time()
            cpu_s = meter.report()
            stats = fake.stats()
    total = {
        key: sum(getattr(c, key) for c in counts.values())
        for key in ("claimed", "generated", "cache_hits", "fell_back", "held", "scheduled")
    }
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
        **sampler.figures(),
        "cpu_s": cpu_s,
        "loadavg_before": load0,
        "probe": probe.summary(),
    }
