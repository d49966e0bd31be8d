"""Throughput, latency, memory and claim-cost benchmark of `process-campaign-sends`.

Runs the real flow under a Prefect API (the test harness, started once) against the fake OpenAI
server in a child process, on a database this script creates beside DATABASE_URL (else on the
embedded server) and drops at the end. Every measured flow run, and every bare-client run, is a
fresh child process of this script, so peak RSS is per run and no run warms another's caches.

    PYTHONPATH=. .venv/bin/python benchmarks/generation.py --json benchmarks/results.json

See docs/benchmarks.md for what each figure means and the results on the reference machine.
The parts: generation_setup (seed), generation_bench (the parent), generation_flow (a flow
run and its probe), generation_parts (the bare client, per-component costs), generation_claim,
generation_profile, generation_summary; the shared harness is in benchmarks/harness/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.generation_bench import Bench  # noqa: E402
from benchmarks.generation_setup import VARIANTS  # noqa: E402
from benchmarks.generation_summary import print_table  # noqa: E402
from benchmarks.harness.parent import (  # noqa: E402
    add_output_arguments,
    emit,
    start_parent,
    write_json,
)


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
    parser.add_argument(
        "--parallel-latency-ms", type=float, default=0.0, help="LLM latency of the two-runs what-if"
    )
    parser.add_argument(
        "--parallel-concurrency",
        type=int,
        help="LLM_MAX_CONCURRENCY of each of the two runs (default --concurrency)",
    )
    parser.add_argument("--py-spy-n", type=int, default=3_000, help="leads in the profiled run")
    parser.add_argument(
        "--py-spy-variant", action="append", choices=VARIANTS, help="variants to profile"
    )
    parser.add_argument("--py-spy-rate", type=int, default=50, help="py-spy samples/s")
    add_output_arguments(parser)
    parser.add_argument("--child-flow", help=argparse.SUPPRESS)
    parser.add_argument("--child-bare", help=argparse.SUPPRESS)
    parser.add_argument("--child-micro", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A child imports only what its mode needs (Prefect and the flows are heavy).
    if args.child_flow:
        from benchmarks.generation_flow import child_flow

        emit(child_flow(json.loads(args.child_flow)))
        return
    if args.child_micro:
        from benchmarks.generation_parts import child_micro

        emit(child_micro(json.loads(args.child_micro)))
        return
    if args.child_bare:
        from benchmarks.generation_parts import child_bare

        emit(child_bare(json.loads(args.child_bare)))
        return
    start_parent()
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
        write_json(args.json, results)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
