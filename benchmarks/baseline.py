"""A naive baseline of the seed's data flow, side by side with `process-campaign-sends`.

The naive baseline is the seed's pseudo-code (data-flow steps 2 to 5) taken literally, in one
plain Python process without Prefect: one ORM query for every due CampaignLead, then for each
lead in turn its Lead, Campaign and steps through the ORM, the draft rendered and the prompt
built with the project's own functions (so the request is byte for byte the one the flow
sends), one blocking `openai.OpenAI` call, and one transaction per lead (insert
GeneratedMessage, flush, insert EmailSend, update CampaignLead, commit). It has no claim, no
cache, no quality gate and no sending window: scheduledFor is the cutoff ("new Date()"), the
next step follows its delayDays later.

Everything else is generation.py's: the throwaway database beside DATABASE_URL (else on the
embedded server), the seed, the Prefect test harness, the fake OpenAI server in its own process,
the real flow's measured child (`child_flow`, unchanged), and the way a child is measured (wall
time, CPU of every process, the child's own peak RSS). Each measured run, naive or real, is a
fresh child process, and real and naive runs alternate.

    PYTHONPATH=. .venv/bin/python benchmarks/baseline.py --quick     # ~3 min
    PYTHONPATH=. .venv/bin/python benchmarks/baseline.py \\
        --json benchmarks/results-baseline.json                      # ~25-30 min on a quiet machine

See docs/benchmarks.md for the results on the reference machine. The naive loop is in
baseline_naive.py, the tables in baseline_summary.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.baseline_summary import print_summary, summarise_baseline  # noqa: E402
from benchmarks.generation import parse_args as generation_args  # noqa: E402
from benchmarks.generation_bench import Bench  # noqa: E402
from benchmarks.harness.machine import git, loadavg, rss_now_kib  # noqa: E402
from benchmarks.harness.parent import (  # noqa: E402
    add_output_arguments,
    emit,
    start_parent,
    write_json,
)


class BaselineBench(Bench):
    """Bench.run() creates, migrates and drops the database and starts the Prefect harness; it
    runs the parts named in args.only, here the single part `measure`."""

    child_script = Path(__file__).resolve()

    def __init__(self, args: argparse.Namespace, options: argparse.Namespace) -> None:
        super().__init__(args)
        self.options = options
        self.settle_limit_s = options.settle_limit

    def naive_run(self, n: int, latency_ms: float, label: str) -> dict[str, Any]:
        result = self.seeded_run("naive", n, latency_ms, label, {})
        ok = (
            result["counts"]["scheduled"] == n
            and result["verified"]["llm_messages"] == n
            and result["verified"]["sends"] == n
            and result["verified"]["advanced"] == n
            and result["llm_requests"] == n
            and not result["prefect_imported"]
        )
        result["complete"] = ok
        self.log(
            f"{label}: {n} leads in {result['seconds']:.1f} s = {result['leads_per_s']:.1f}/s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB, cpu {result['cpu_s']}"
            + ("" if ok else f"  INCOMPLETE: {result['counts']} {result['verified']}")
        )
        return result

    def measure(self) -> None:
        """0 ms: real and naive alternating at each shared size, then the real flow alone at
        the larger sizes; then the slow LLM, naive and real alternating."""
        o = self.options
        self.flow_run(o.warmup_n, 0, f"warm-up flow n={o.warmup_n} (discarded)")
        self.results["runs"][-1]["label"] = "warmup"
        for n in o.sizes:
            both = n in o.naive_sizes
            for i in range(o.runs if both else o.growth_runs):
                self.flow_run(n, 0, f"flow 0ms n={n} #{i + 1}")
                if both:
                    self.naive_run(n, 0, f"naive 0ms n={n} #{i + 1}")
        for n in o.naive_sizes:
            if n not in o.sizes:
                for i in range(o.runs):
                    self.naive_run(n, 0, f"naive 0ms n={n} #{i + 1}")
        latency = o.slow_latency_ms
        for i in range(o.runs):
            self.naive_run(
                o.slow_naive_n, latency, f"naive {latency:g}ms n={o.slow_naive_n} #{i + 1}"
            )
            for n in o.slow_flow_n:
                self.flow_run(n, latency, f"flow {latency:g}ms n={n} #{i + 1}")


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke check: 1k, small N, 1 run")
    parser.add_argument("--runs", type=int, default=3, help="repeats where both run (3)")
    parser.add_argument(
        "--sizes", type=sizes, default=[1_000, 10_000, 100_000], help="real flow N at 0 ms"
    )
    parser.add_argument(
        "--naive-sizes", type=sizes, default=[1_000, 10_000], help="naive N at 0 ms"
    )
    parser.add_argument("--growth-runs", type=int, default=1, help="repeats of real-only sizes")
    parser.add_argument("--slow-latency-ms", type=float, default=300.0)
    parser.add_argument("--slow-naive-n", type=int, default=200, help="naive N at the latency")
    parser.add_argument(
        "--slow-flow-n", type=sizes, default=[200, 3_000], help="real flow N at the latency"
    )
    parser.add_argument("--warmup-n", type=int, default=200, help="discarded first flow run")
    parser.add_argument("--concurrency", type=int, default=64, help="LLM_MAX_CONCURRENCY (64)")
    parser.add_argument("--batch-size", type=int, default=500, help="flow batch_size (500)")
    parser.add_argument(
        "--settle-limit", type=float, help="max seconds to wait for a quiet machine (60)"
    )
    add_output_arguments(parser)
    parser.add_argument("--child-flow", help=argparse.SUPPRESS)
    parser.add_argument("--child-naive", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.growth_runs = 1, 1
        args.sizes, args.naive_sizes = [1_000], [1_000]
        args.slow_naive_n, args.slow_flow_n, args.warmup_n = 20, [20], 100
    if args.settle_limit is None:
        args.settle_limit = 10.0 if args.quick else 60.0
    return args


def git_state() -> dict[str, Any]:
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git(
            "status", "--porcelain", "--", "core", "db", "tasks", "flows"
        ).splitlines(),
    }


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    # The naive child must not import Prefect, so each child imports only its own mode.
    if options.child_flow:
        from benchmarks.generation_flow import child_flow

        emit(child_flow(json.loads(options.child_flow)))
        return
    if options.child_naive:
        from benchmarks.baseline_naive import child_naive

        emit(child_naive(json.loads(options.child_naive)))
        return
    start_parent()
    # generation.py's arguments for its Bench: only our part, no figures of its own.
    args = generation_args([])
    args.only = ["measure"]
    args.n = args.slow_n = args.big_n = 0
    args.concurrency, args.batch_size = options.concurrency, options.batch_size
    args.keep_db = options.keep_db
    load_start = loadavg()
    if load_start >= 1.0:
        print(f"note: load average {load_start:.2f}: the machine is busy", file=sys.stderr)
    started = time.perf_counter()
    bench = BaselineBench(args, options)
    results = bench.run()
    results["wall_seconds"] = time.perf_counter() - started
    results["argv"] = sys.argv
    results["options"] = {k: v for k, v in vars(options).items() if not k.startswith("child")}
    results["loadavg"] = {"start": load_start, "end": loadavg()}
    results["git"] = git_state()
    # For the record: a child's ru_maxrss would inherit this (see generation.peak_rss_kib).
    results["parent_rss_mib"] = rss_now_kib() / 1024
    results["summary"] = summarise_baseline(results, options)
    print_summary(results["summary"])
    print(
        f"\nload average {load_start:.2f} at start, {results['loadavg']['end']:.2f} at end; "
        f"{results['wall_seconds'] / 60:.1f} min in all"
    )
    if options.json:
        write_json(options.json, results)
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
