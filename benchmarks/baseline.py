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

See docs/benchmarks.md for the results on the reference machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.generation import (  # noqa: E402
    AS_OF,
    DUMMY_KEY,
    MODEL,
    RESULT_MARKER,
    Bench,
    CPUMeter,
    RssSampler,
    child_flow,
    llm_latency_ms,
    loadavg,
    median,
    peak_rss_kib,
    rss_now_kib,
    seed_due_leads,
    verify_run,
)
from benchmarks.generation import parse_args as generation_args  # noqa: E402

# --------------------------------------------------------------------------------------------
# The naive baseline itself


def naive_process_campaign_sends(factory: Any, client: Any, *, as_of: datetime, model: str):
    """Seed data-flow steps 2 to 5, literally: one lead at a time, one commit per lead."""
    from sqlalchemy import select

    from core.campaigns.lead_fields import LEAD_FIELDS
    from core.campaigns.sending_rules import parse_sending_rules
    from core.campaigns.templates import lead_variables
    from core.generation.draft import EmailDraft, render_draft
    from core.generation.generate import sender_name
    from core.generation.llm import RESPONSE_FORMAT, estimate_cost
    from core.generation.prompt import PROMPT_VERSION, build_messages, prompt_profile
    from db.models import Campaign, CampaignLead, EmailSend, GeneratedMessage, Lead, SequenceStep

    counts = {"due": 0, "scheduled": 0, "completed": 0, "llm_calls": 0}
    with factory() as session:
        # 2. Cron job finds due emails:
        #    SELECT * FROM CampaignLead WHERE status = 'active' AND nextScheduledDate <= NOW()
        due = session.scalars(
            select(CampaignLead).where(
                CampaignLead.status == "active", CampaignLead.nextScheduledDate <= as_of
            )
        ).all()
        counts["due"] = len(due)
        for enrolment in due:
            lead = session.get(Lead, enrolment.leadId)
            campaign = session.get(Campaign, enrolment.campaignId)
            step = session.scalars(
                select(SequenceStep).where(
                    SequenceStep.campaignId == enrolment.campaignId,
                    SequenceStep.stepOrder == enrolment.currentStepOrder,
                )
            ).one()
            next_step = session.scalars(
                select(SequenceStep).where(
                    SequenceStep.campaignId == enrolment.campaignId,
                    SequenceStep.stepOrder == enrolment.currentStepOrder + 1,
                )
            ).one_or_none()

            # 3. AI generates the personalised email: template + lead data + AI instructions.
            rules = parse_sending_rules(campaign.sendingRules)
            name = sender_name(rules)
            fields = {field: getattr(lead, field) for field in LEAD_FIELDS}
            variables = lead_variables(fields, lead.customFields, name)
            draft = render_draft(step.subjectTemplate, step.bodyTemplate, variables)
            messages = build_messages(
                campaign.goal,
                step.aiInstructions,
                draft,
                prompt_profile(variables),
                sender_name=name,
                link_allowlist=rules.link_allowlist,
            )
            started = time.monotonic()
            completion = client.chat.completions.create(
                model=model, messages=messages, response_format=RESPONSE_FORMAT
            )
            latency_ms = round(1000 * (time.monotonic() - started))
            counts["llm_calls"] += 1
            email = EmailDraft.model_validate_json(completion.choices[0].message.content or "")
            usage = completion.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            message = GeneratedMessage(
                campaignId=enrolment.campaignId,
                leadId=enrolment.leadId,
                stepId=step.id,
                subject=email.subject,
                body=email.body,
                status="generated",
                model=completion.model,
                promptVersion=PROMPT_VERSION,
                promptTokens=prompt_tokens,
                completionTokens=completion_tokens,
                latencyMs=latency_ms,
                costUsd=Decimal(
                    str(round(estimate_cost(completion.model, prompt_tokens, completion_tokens), 6))
                ),
            )
            session.add(message)
            session.flush()  # like the pseudo-code's create(): the row and its id exist now

            # 4. Email scheduled for sending.
            session.add(
                EmailSend(
                    campaignId=enrolment.campaignId,
                    leadId=enrolment.leadId,
                    stepId=step.id,
                    generatedMessageId=message.id,
                    toEmail=lead.email,
                    status="scheduled",
                    scheduledFor=as_of,
                )
            )

            # 5. Progression updated.
            enrolment.currentStepOrder = step.stepOrder + 1
            if next_step is None:
                enrolment.status = "completed"
                enrolment.nextScheduledDate = None
                counts["completed"] += 1
            else:
                enrolment.nextScheduledDate = as_of + timedelta(days=next_step.delayDays)
            session.commit()
            counts["scheduled"] += 1
    return counts


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured naive run, measured exactly as generation.child_flow measures a flow run."""
    from openai import OpenAI

    from db.engine import make_engine, make_session_factory
    from tests.support.fake_openai import FakeOpenAI

    n = spec["n"]
    with FakeOpenAI(latency_ms=spec["latency_ms"], process=True, record_bodies=False) as fake:
        engine = make_engine(spec["database_url"])
        with engine.connect():  # connect before the clock starts, as the flow child does
            pass
        factory = make_session_factory(engine)
        # The pipeline's own client settings (LLM_TIMEOUT_SECONDS, LLM_MAX_RETRIES).
        client = OpenAI(api_key=DUMMY_KEY, base_url=fake.base_url, timeout=30.0, max_retries=4)
        rss_before = rss_now_kib()
        meter = CPUMeter(fake.child_pid, spec)
        load0 = loadavg()
        started_epoch = time.time()
        started = time.perf_counter()
        with RssSampler() as sampler:
            counts = naive_process_campaign_sends(factory, client, as_of=AS_OF, model=MODEL)
        elapsed = time.perf_counter() - started
        ended_epoch = time.time()
        cpu_s = meter.stop()
        stats = fake.stats()
        client.close()
        engine.dispose()

    samples = sampler.samples
    return {
        "kind": "naive",
        "n": n,
        "latency_ms": spec["latency_ms"],
        "concurrency": 1,
        "seconds": elapsed,
        "started_epoch": started_epoch,
        "ended_epoch": ended_epoch,
        "leads_per_s": counts["scheduled"] / elapsed,
        "counts": counts,
        "llm_requests": stats.requests,
        "prefect_imported": "prefect" in sys.modules,
        "rss_before_flow_mib": rss_before / 1024,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "rss_at_10pct_mib": samples[len(samples) // 10][1] / 1024 if samples else None,
        "rss_at_end_mib": samples[-1][1] / 1024 if samples else None,
        "cpu_s": cpu_s,
        "loadavg_before": load0,
    }


# --------------------------------------------------------------------------------------------
# Parent: generation.py's Bench, with one more kind of child


class BaselineBench(Bench):
    """Bench.run() creates, migrates and drops the database and starts the Prefect harness; it
    runs the parts named in args.only, here the single part `measure`."""

    child_script = Path(__file__).resolve()

    def __init__(self, args: argparse.Namespace, options: argparse.Namespace) -> None:
        super().__init__(args)
        self.options = options

    def settle(self, limit_s: float | None = None) -> float:
        return super().settle(self.options.settle_limit if limit_s is None else limit_s)

    def naive_run(self, n: int, latency_ms: float, label: str) -> dict[str, Any]:
        seeded = seed_due_leads(self.url, n)
        spec = {
            "database_url": self.url,
            "n": n,
            "latency_ms": latency_ms,
            "prefect_server_pid": self.prefect_server_pid,
            "postmaster_pid": self.postmaster_pid,
        }
        result = self.child("naive", spec)
        result["label"] = label
        result["seed_seconds"] = seeded
        result["verified"] = verify_run(self.url, n)
        result["llm_latency_ms"] = llm_latency_ms(self.url)
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


# --------------------------------------------------------------------------------------------
# Summary


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


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def print_summary(summary: dict[str, Any]) -> None:
    def raw(c: dict[str, Any]) -> str:
        values = ", ".join(f"{v:g}" for v in c["leads_per_s_all"])
        return f"{c['leads_per_s']:.1f} ({values})" + ("" if c["complete"] else " INCOMPLETE")

    print(
        "\nnaive baseline vs process-campaign-sends (medians of the raw values in parentheses;"
        "\nCPU = the measured process / it + fake OpenAI + PostgreSQL (+ Prefect API, real only))"
    )
    table(
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
    table(
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


# --------------------------------------------------------------------------------------------


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
    parser.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
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
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git(
            "status", "--porcelain", "--", "core", "db", "tasks", "flows"
        ).splitlines(),
    }


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if options.child_flow:
        print(RESULT_MARKER + json.dumps(child_flow(json.loads(options.child_flow))), flush=True)
        return
    if options.child_naive:
        print(RESULT_MARKER + json.dumps(child_naive(json.loads(options.child_naive))), flush=True)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
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
        Path(options.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
