"""The generation benchmark's parent: which runs to make, in which order, and what each proves.

Every measured flow run and every bare-client run is a fresh child process of the script
(`child_script`), so peak RSS is per run and no run warms another's caches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.generation_claim import claim_what_ifs, explain_claim
from benchmarks.generation_setup import (
    AS_OF,
    VARIANTS,
    llm_latency_ms,
    sample_messages,
    seed_due_leads,
    seed_million,
    verify_run,
)
from benchmarks.generation_summary import summarise
from benchmarks.harness.parent import Parent


class Bench(Parent):
    # The script whose --child-<mode> entry each child runs; benchmarks/baseline.py subclasses
    # Bench and points this at itself.
    child_script = Path(__file__).resolve().with_name("generation.py")

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, db_name=f"cp_bench_{os.getpid()}", logs_prefix="cp-bench-logs-")
        self.messages_file: Path | None = None
        self.results = {"as_of": AS_OF.isoformat(), "runs": []}

    def child(self, mode: str, spec: dict[str, Any], *, profile: Path | None = None) -> dict:
        return self.children_of(mode, [spec], profile=profile)[0]

    def children_of(
        self, mode: str, specs: list[dict[str, Any]], *, profile: Path | None = None
    ) -> list[dict[str, Any]]:
        """Run one child per spec, all at once, optionally under py-spy; keeps every run."""
        prefix = None
        if profile is not None:
            spy = Path(sys.executable).with_name("py-spy")
            rate = str(self.args.py_spy_rate)
            prefix = [str(spy), "record", "--format", "raw", "--rate", rate, "--nonblocking"]
            prefix += ["--idle", "--threads", "-o", str(profile), "--"]
        results = self.children(mode, specs, prefix=prefix)
        if mode != "micro":
            self.results["runs"].extend(results)
        return results

    def seeded_run(
        self,
        mode: str,
        n: int,
        latency_ms: float,
        label: str,
        spec: dict[str, Any],
        *,
        profile: Path | None = None,
    ) -> dict[str, Any]:
        """n freshly seeded due leads, one child run over them, and what it left behind."""
        seeded = seed_due_leads(self.url, n)
        spec = {
            "database_url": self.url,
            "n": n,
            "latency_ms": latency_ms,
            **spec,
            "prefect_server_pid": self.prefect_server_pid,
            "postmaster_pid": self.postmaster_pid,
        }
        result = self.child(mode, spec, profile=profile)
        result["label"] = label
        result["seed_seconds"] = seeded
        result["verified"] = verify_run(self.url, n)
        result["llm_latency_ms"] = llm_latency_ms(self.url)
        return result

    def flow_run(
        self,
        n: int,
        latency_ms: float,
        label: str,
        *,
        profile: Path | None = None,
        variant: str = "baseline",
    ):
        spec = {
            "concurrency": self.args.concurrency,
            "batch_size": self.args.batch_size,
            "variant": variant,
        }
        result = self.seeded_run("flow", n, latency_ms, label, spec, profile=profile)
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
        apart); the figure is all leads over first start to last finish."""
        n, latency = self.args.n, self.args.parallel_latency_ms
        concurrency = self.args.parallel_concurrency or self.args.concurrency
        for i in range(self.args.variant_runs):
            seed_due_leads(self.url, n)
            spec = {
                "database_url": self.url,
                "n": n,
                "latency_ms": latency,
                "concurrency": concurrency,
                "batch_size": self.args.batch_size,
                "variant": "baseline",
                "start_at": time.time() + 25,
            }
            pair = self.children_of("flow", [spec, spec])
            span = max(r["ended_epoch"] for r in pair) - min(r["started_epoch"] for r in pair)
            scheduled = sum(r["counts"]["scheduled"] for r in pair)
            verified = verify_run(self.url, n)
            for r in pair:
                r["label"] = f"parallel-2 {latency:g}ms c={concurrency} n={n} #{i + 1}"
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
                f"two runs at once ({latency:g} ms, c={concurrency} each): {scheduled} leads in "
                f"{span:.1f} s = {scheduled / span:.0f}/s"
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
        # Imported here: it names the project's functions, so it imports Prefect.
        from benchmarks.generation_profile import summarise_profile

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
            f"{c['function_ms_median']:.2f} ms over {c['runs']} runs; threads of "
            f"{c['follow_ups']} follow-ups ({c['sent_emails_in_threads']} sent emails): "
            f"execution median {c['thread_execution_ms_median']} ms"
        )
        if self.args.claim_what_if:
            self.results["claim_what_if"] = claim_what_ifs(
                self.url, self.args.claim_runs, self.args.batch_size, self.log
            )

    def run(self) -> dict[str, Any]:
        """Every part asked for, on one database and one Prefect API; then the summary."""
        with self.database(), self.prefect_api():
            parts = self.args.only or ["throughput", "slow", "rss", "claim"]
            if self.args.variants:
                extra = ("variants", "parallel", "micro")
                parts = [*parts, *(p for p in extra if p not in parts)]
            if self.args.py_spy:
                parts = [*parts, "profile"]
            for part in parts:
                getattr(self, part)()
        self.results["summary"] = summarise(self.results, self.args)
        return self.results
