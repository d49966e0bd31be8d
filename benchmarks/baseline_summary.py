"""The baseline's summary: real against naive side by side, and growth with N."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.harness.machine import median
from benchmarks.harness.parent import print_columns


def cell(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians over repeats of one (kind, n, latency), with every raw value."""
    if not runs:
        return None

    def cpu_all(r: dict[str, Any]) -> float:
        # The Prefect API server counts for the flow only: the naive run never talks to it.
        cpu = r["cpu_s"]
        parts = ["flow_process", "fake_openai", "postgres"]
        if r["kind"] == "flow":
            parts.append("prefect_api")
        return sum(cpu[p] for p in parts if cpu.get(p) is not None)

    n = runs[0]["n"]
    return {
        "kind": runs[0]["kind"],
        "n": n,
        "latency_ms": runs[0]["latency_ms"],
        "runs": len(runs),
        "complete": all(r["complete"] for r in runs),
        "seconds": median([r["seconds"] for r in runs]),
        "leads_per_s": median([r["leads_per_s"] for r in runs]),
        "leads_per_s_all": [round(r["leads_per_s"], 1) for r in runs],
        "cpu_ms_per_lead_process": median([1000 * r["cpu_s"]["flow_process"] / n for r in runs]),
        "cpu_ms_per_lead_all": median([1000 * cpu_all(r) / n for r in runs]),
        "peak_rss_mib": median([r["peak_rss_mib"] for r in runs]),
        "rss_before_mib": median([r["rss_before_flow_mib"] for r in runs]),
        "machine_busy_pct": median([r["cpu_s"]["machine_busy_pct"] for r in runs]),
        "loadavg_before": [r["loadavg_before"] for r in runs],
    }


def summarise_baseline(results: dict[str, Any], o: argparse.Namespace) -> dict[str, Any]:
    """Side by side where both ran, growth with N, and the naive sizes extrapolated."""
    runs = [r for r in results["runs"] if r.get("label") != "warmup"]

    def find(kind: str, n: int, latency: float) -> dict[str, Any] | None:
        return cell(
            [r for r in runs if r["kind"] == kind and r["n"] == n and r["latency_ms"] == latency]
        )

    side: list[dict[str, Any]] = []
    for n in o.naive_sizes:
        real, naive = find("flow", n, 0), find("naive", n, 0)
        if real and naive:
            side.append({"latency_ms": 0, "real": real, "naive": naive})
    naive_slow = find("naive", o.slow_naive_n, o.slow_latency_ms)
    for n in o.slow_flow_n:
        real = find("flow", n, o.slow_latency_ms)
        if real and naive_slow:
            side.append({"latency_ms": o.slow_latency_ms, "real": real, "naive": naive_slow})
    for row in side:
        row["ratio"] = row["real"]["leads_per_s"] / row["naive"]["leads_per_s"]

    growth = [c for n in o.sizes if (c := find("flow", n, 0))]
    growth += [c for n in o.naive_sizes if (c := find("naive", n, 0))]
    extrapolated = []
    naive_cells = [c for c in growth if c["kind"] == "naive"]
    if naive_cells:
        largest = max(naive_cells, key=lambda c: c["n"])
        for target in [n for n in o.sizes if n not in o.naive_sizes]:
            at_zero = largest["seconds"] / largest["n"] * target
            entry = {
                "n": target,
                "from_n": largest["n"],
                "seconds_0ms": at_zero,
                "note": "linear: the naive loop's cost per lead times N",
            }
            if naive_slow:
                per_lead = naive_slow["seconds"] / naive_slow["n"]
                entry["seconds_at_latency"] = per_lead * target
                entry["latency_ms"] = o.slow_latency_ms
            extrapolated.append(entry)
    return {"side_by_side": side, "growth": growth, "naive_extrapolated": extrapolated}


def print_summary(summary: dict[str, Any]) -> None:
    """The two tables and the extrapolations, as text."""

    def raw(c: dict[str, Any]) -> str:
        values = ", ".join(f"{v:g}" for v in c["leads_per_s_all"])
        return f"{c['leads_per_s']:.1f} ({values})" + ("" if c["complete"] else " INCOMPLETE")

    print(
        "\nnaive baseline vs process-campaign-sends (medians of the raw values in parentheses;"
        "\nCPU = the measured process / it + fake OpenAI + PostgreSQL (+ Prefect API, real only))"
    )
    print_columns(
        (
            "LLM",
            "N real/naive",
            "real leads/s",
            "naive leads/s",
            "ratio",
            "CPU ms/lead real",
            "CPU ms/lead naive",
            "peak RSS real/naive",
        ),
        [
            (
                f"{row['latency_ms']:g} ms",
                f"{row['real']['n']:,} / {row['naive']['n']:,}",
                raw(row["real"]),
                raw(row["naive"]),
                f"{row['ratio']:.1f}x",
                f"{row['real']['cpu_ms_per_lead_process']:.2f} / "
                f"{row['real']['cpu_ms_per_lead_all']:.2f}",
                f"{row['naive']['cpu_ms_per_lead_process']:.2f} / "
                f"{row['naive']['cpu_ms_per_lead_all']:.2f}",
                f"{row['real']['peak_rss_mib']:.0f} / {row['naive']['peak_rss_mib']:.0f} MiB",
            )
            for row in summary["side_by_side"]
        ],
    )
    print("\ngrowth with N, 0 ms LLM (medians)")
    print_columns(
        (
            "implementation",
            "N",
            "runs",
            "seconds",
            "leads/s",
            "CPU ms/lead process/all",
            "peak RSS MiB",
        ),
        [
            (
                "real flow" if c["kind"] == "flow" else "naive",
                f"{c['n']:,}",
                str(c["runs"]),
                f"{c['seconds']:.1f}",
                raw(c),
                f"{c['cpu_ms_per_lead_process']:.2f} / {c['cpu_ms_per_lead_all']:.2f}",
                f"{c['peak_rss_mib']:.0f}",
            )
            for c in summary["growth"]
        ],
    )
    for e in summary["naive_extrapolated"]:
        line = (
            f"naive at N={e['n']:,} not run: extrapolated from N={e['from_n']:,} "
            f"{e['seconds_0ms'] / 60:.0f} min at 0 ms"
        )
        if "seconds_at_latency" in e:
            line += f", {e['seconds_at_latency'] / 3600:.1f} h at {e['latency_ms']:g} ms"
        print(line)
