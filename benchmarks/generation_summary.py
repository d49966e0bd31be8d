"""The generation benchmark's summary: one row per target, with its goal and verdict."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.generation_setup import VARIANTS
from benchmarks.harness.machine import median
from benchmarks.harness.parent import print_columns


def summarise(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per target measured in this invocation; `pass` is None for information rows."""
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
                    f"claim_due_leads() {claim['function_ms_median']:.1f} ms"
                    + (
                        f", of which the threads of {claim['follow_ups']} follow-ups "
                        f"{claim['thread_execution_ms_median']:.2f} ms execution"
                        if claim.get("thread_execution_ms_median") is not None
                        else ""
                    )
                    + ")"
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
    """The summary rows as a text table."""
    verdicts = {True: "PASS", False: "FAIL", None: ""}
    print_columns(
        ("target", "goal", "median", "runs", "pass"),
        [(r["target"], r["goal"], r["figure"], str(r["runs"]), verdicts[r["pass"]]) for r in rows],
    )
