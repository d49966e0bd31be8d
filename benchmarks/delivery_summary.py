"""The delivery benchmark's summary: rates, ratios to bare smtplib, and where the time goes."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.harness.machine import median


def variant_key(mailboxes: int, connections: int) -> str:
    return f"{mailboxes} mbox/{connections} conn"


def bare_key(run: dict[str, Any]) -> str:
    """A bare run's row: its mode, and with --accounts the variant whose logins it used."""
    if "lanes" not in run:
        return run["mode"]
    return f"{run['mode']}, {variant_key(run['mailboxes'], run['connections'])}"


# Targets. Issue 11: the flow against bare smtplib on one connection. Issue 13 (--accounts):
# the flow against the durable loop over the same logins; the other bare rows are ceilings.
FLOW_TARGET = 300
BARE_TARGET = 0.5
DURABLE_TARGET = 0.7


def ratio_target(bare: dict[str, Any]) -> float | None:
    """The least flow / bare ratio that passes, None for a ceiling (no target)."""
    if bare["variant"] is None:
        return BARE_TARGET
    return DURABLE_TARGET if bare["mode"] == "durable" else None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    runs = [r for r in results["runs"] if "discarded" not in r["label"]]
    summary: dict[str, Any] = {
        "flow": {},
        "bare": {},
        "ratios": {},
        "ratio_targets": {},
        "breakdown_us_per_send": {},
    }
    bares: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["kind"] == "bare":
            bares.setdefault(bare_key(r), []).append(r)
    for key, group in bares.items():
        rates = [r["msgs_per_s"] for r in group]
        variant = (
            variant_key(group[0]["mailboxes"], group[0]["connections"])
            if "lanes" in group[0]
            else None
        )
        summary["bare"][key] = {
            "median": median(rates),
            "all": rates,
            "mode": group[0]["mode"],
            "variant": variant,  # None: one connection without AUTH, whatever the flow's
            "complete": all(r.get("complete", True) for r in group),
        }
        if "cpu_ms_per_send" in group[0]:
            summary["bare"][key]["cpu_ms_per_send"] = {
                k: median([r["cpu_ms_per_send"][k] for r in group])
                for k in group[0]["cpu_ms_per_send"]
            }
    flows: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["kind"] == "flow":
            flows.setdefault(variant_key(r["mailboxes"], r["connections"]), []).append(r)
    for key, group in flows.items():
        rates = [r["sends_per_s"] for r in group]
        summary["flow"][key] = {
            "median": median(rates),
            "all": rates,
            "complete": all(r["complete"] for r in group),
            "cpu_ms_per_send": {
                k: median([r["cpu_ms_per_send"][k] for r in group])
                for k in group[0]["cpu_ms_per_send"]
            },
            "machine_busy_pct": median([r["machine_busy_pct"] for r in group]),
        }
        sent = [r.get("sent_per_mailbox") or {"-": 0} for r in group]
        summary["flow"][key]["sent_per_mailbox_range"] = [
            min(min(counts.values()) for counts in sent),
            max(max(counts.values()) for counts in sent),
        ]
        for name, bare in summary["bare"].items():
            if bare["variant"] in (None, key):
                ratio = f"{key} / bare ({name})"
                summary["ratios"][ratio] = median(rates) / bare["median"]
                summary["ratio_targets"][ratio] = ratio_target(bare)
        if any(r["probe"] is None for r in group):
            continue  # --no-probe: nothing was timed inside the run
        names = {name for r in group for name in r["probe"]["us_per_send"]}
        breakdown = {
            name: median([r["probe"]["us_per_send"].get(name, 0.0) for r in group])
            for name in names
        }
        breakdown["flow wall"] = median([1e6 / r["sends_per_s"] for r in group])
        breakdown["lanes wall (union of lane spans)"] = median(
            [1e6 * r["probe"]["lanes_wall_s"] / r["report"]["sent"] for r in group]
        )
        breakdown["hand_over, first 10% of calls (per call)"] = median(
            [r["probe"]["hand_over_us_first_10pct"] for r in group]
        )
        breakdown["hand_over, last 10% of calls (per call)"] = median(
            [r["probe"]["hand_over_us_last_10pct"] for r in group]
        )
        summary["breakdown_us_per_send"][key] = breakdown
    return summary


BREAKDOWN_ORDER = (
    ("flow wall", 0),
    ("lanes wall (union of lane spans)", 1),
    ("lane thread total", 1),
    ("lane thread CPU", 2),
    ("hand_over (locks + guarded UPDATE)", 2),
    ("SQL advisory locks (incl. wait)", 3),
    ("SQL hand-over UPDATE", 3),
    ("record_results", 2),
    ("SQL record_results UPDATE", 3),
    ("COMMIT", 2),
    ("pool pre-ping", 2),
    ("SMTPTransport.open (connect, AUTH)", 2),
    ("reserve campaign room", 2),
    ("release campaign room", 2),
    ("SQL other", 2),
    ("outgoing_message (token, ids, build)", 2),
    ("build_message", 3),
    ("SMTPTransport.deliver", 2),
    ("_wire_bytes (as_bytes)", 3),
    ("claim (query + DueSend)", 1),
    ("plan (usage query + plan_deliveries)", 1),
    ("COMMIT [outside lanes]", 1),
    ("pool pre-ping [outside lanes]", 1),
    ("SQL claim [outside lanes]", 1),
    ("SQL other [outside lanes]", 1),
    ("hand_over, first 10% of calls (per call)", 1),
    ("hand_over, last 10% of calls (per call)", 1),
)


def print_summary(results: dict[str, Any], args: argparse.Namespace) -> None:
    s = results["summary"]
    print(f"\nsend-scheduled-emails, n = {args.sends:,} sends, batch {args.batch_size}; medians")
    bare = s["bare"]
    for key, flow in s["flow"].items():
        verdict = "PASS" if flow["median"] >= FLOW_TARGET else "FAIL"
        rates = ", ".join(f"{v:.0f}" for v in flow["all"])
        done = "" if flow["complete"] else "  (INCOMPLETE runs!)"
        low, high = flow["sent_per_mailbox_range"]
        print(
            f"  flow, {key:17} {flow['median']:6.0f} sends/s  ({rates})  >= {FLOW_TARGET}:"
            f" {verdict}{done}; each mailbox sent {low}-{high} a run"
        )
    labels = {
        "prebuilt": "prebuilt bytes",
        "build": "build_message each",
        "durable": "durable loop",
    }
    for row in bare.values():
        rates = ", ".join(f"{v:.0f}" for v in row["all"])
        label = f"{labels[row['mode']]}{', ' + row['variant'] if row['variant'] else ''}"
        done = "" if row["complete"] else "  (INCOMPLETE runs!)"
        print(f"  bare smtplib, {label:34} {row['median']:6.0f} msgs/s  ({rates}){done}")
    for key, ratio in s["ratios"].items():
        target = s["ratio_targets"][key]
        verdict = "(a ceiling, not the target)"
        if target is not None:
            verdict = f">= {100 * target:.0f}%: {'PASS' if ratio >= target else 'FAIL'}"
        print(f"  {key:56} {100 * ratio:5.0f}%  {verdict}")
    print_cpu(s)
    keys = list(s["breakdown_us_per_send"])
    if keys:
        print_breakdown(s, keys)
    explain = results.get("hand_over_explain")
    if explain:
        print(
            f"\nHAND_OVER after a {args.sends:,}-send run: {explain['median_ms']:.2f} ms"
            " execution; what it reads:"
        )
        for scan in explain["scans"]:
            print(f"  {scan}")
    if results.get("code_changed_during_run"):
        print("\nWARNING: product code changed during the run:", results["code_at_start"], "->")
        print("        ", results["code_at_end"])
    profile = results.get("profile")
    if profile:
        print(f"\ncProfile of one 1-mailbox run, all threads merged ({profile['file']}):")
        print(profile["cumulative"])


def print_breakdown(s: dict[str, Any], keys: list[str]) -> None:
    """Where the time goes, per variant, from the probe's figures."""
    print("\nwhere the time goes, µs per sent message (lane figures are thread-seconds: with")
    print("several lanes they add up to more than the wall time)")
    print(f"  {'':46}" + "".join(f"{k:>14}" for k in keys))
    shown = set()
    for name, depth in BREAKDOWN_ORDER:
        values = [s["breakdown_us_per_send"][k].get(name) for k in keys]
        if all(v is None for v in values):
            continue
        shown.add(name)
        cells = "".join(f"{v:14.1f}" if v is not None else f"{'-':>14}" for v in values)
        print(f"  {'  ' * depth + name:46}{cells}")
    for name in sorted({n for k in keys for n in s["breakdown_us_per_send"][k]} - shown):
        values = [s["breakdown_us_per_send"][k].get(name) for k in keys]
        cells = "".join(f"{v:14.1f}" if v is not None else f"{'-':>14}" for v in values)
        print(f"  {'  ' + name:46}{cells}")


def print_cpu(s: dict[str, Any]) -> None:
    """CPU per message of each process, for the flow and each bare row that measured it: on a
    machine this small the rates follow it."""
    rows = [(f"flow, {key}", flow["cpu_ms_per_send"]) for key, flow in s["flow"].items()]
    rows += [
        (f"bare {name}", row["cpu_ms_per_send"])
        for name, row in s["bare"].items()
        if "cpu_ms_per_send" in row
    ]
    names = ("flow_process", "smtp_server", "postgres", "prefect_api")
    print("\nCPU ms per message: the client (flow or bare process), SMTP server, PostgreSQL, API")
    for label, cpu in rows:
        cells = "".join(f"{cpu[n]:8.3f}" if cpu.get(n) is not None else f"{'-':>8}" for n in names)
        print(f"  {label:46}{cells}")
