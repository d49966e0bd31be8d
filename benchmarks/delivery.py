"""Throughput of `send-scheduled-emails` over SMTP, against the bare smtplib ceiling.

Runs the real flow under a Prefect API (the test harness, started once) against a loopback
aiosmtpd server (tests/support/smtp_server.py) in its own process, on a database this script
creates beside DATABASE_URL (else on the embedded server) and drops at the end. Gaps, jitter,
windows and caps are out of the way, so the figure is the pipeline's own cost per send: the
handover guard, one commit per handover group (--handover-group), building the message and the
SMTP transaction. Every measured flow run and every bare-smtplib run is a fresh child process
of this script; the SMTP server is one more process for the whole run, so its CPU never shares
a GIL with the client.

    PYTHONPATH=. .venv/bin/python benchmarks/delivery.py --json benchmarks/results-delivery.json

The shared harness is in benchmarks/harness/; this benchmark's parts are delivery_setup (seed,
EXPLAIN), delivery_children (the measured runs), delivery_probe and delivery_summary. See
docs/benchmarks.md for the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import make_url  # noqa: E402

from benchmarks.delivery_setup import (  # noqa: E402
    MAILBOXES,
    Account,
    accounts,
    explain_hand_over,
    pg_settings,
    seed_sends,
    sent_per_mailbox,
    status_counts,
)
from benchmarks.delivery_summary import print_summary, summarise, variant_key  # noqa: E402
from benchmarks.harness.machine import code_version, load_triple  # noqa: E402
from benchmarks.harness.parent import (  # noqa: E402
    Parent,
    add_output_arguments,
    emit,
    start_parent,
    write_json,
)
from benchmarks.harness.servers import SMTPServerProcess  # noqa: E402

# With --accounts, the runs over the same logins: the durable loop (the target's measure),
# then smtplib alone building each message, then prebuilt bytes (the ceiling).
LOGIN_MODES = ("durable", "build", "prebuilt")


class Bench(Parent):
    """Flow runs and bare smtplib runs, each a fresh child, against one SMTP server process."""

    child_script = Path(__file__).resolve()
    settle_limit_s = 10.0

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(
            args, db_name=f"cp_bench_delivery_{os.getpid()}", logs_prefix="cp-bench-delivery-"
        )
        self.smtp: SMTPServerProcess | None = None
        # --accounts: every sending mailbox a Mailbox row with its own login, which the SMTP
        # server then requires; the most any variant uses.
        most = max(mailboxes for mailboxes, _ in args.variant)
        self.logins: list[Account] = accounts(most) if args.accounts else []

    def child(self, mode: str, spec: dict[str, Any], label: str) -> dict[str, Any]:
        """One child, after the machine settles; keeps its result under `label`."""
        result = self.children(mode, [spec])[0]
        result.update(label=label, loadavg_before=load_triple())
        self.results["runs"].append(result)
        return result

    def flow_run(
        self, mailboxes: int, connections: int, n: int, label: str, **extra: Any
    ) -> dict[str, Any]:
        smtp = self.smtp
        assert smtp is not None, "run() starts the SMTP server before measure()"
        code = code_version()
        logins = self.logins[:mailboxes]
        seeded = seed_sends(self.url, n, mailboxes, logins=logins, smtp_port=smtp.port)
        accepted0 = smtp.accepted()
        spec = {
            "database_url": self.url,
            "smtp_port": smtp.port,
            "smtp_pid": smtp.pid,
            "max_connections": connections,
            "handover_group": self.args.handover_group,
            "mailboxes": mailboxes,
            "n": n,
            "batch_size": self.args.batch_size,
            "prefect_server_pid": self.prefect_server_pid,
            "postmaster_pid": self.postmaster_pid,
            "passwords": {account.variable: account.password for account in logins},
            "probe": not self.args.no_probe,
            **extra,
        }
        result = self.child("flow", spec, label)
        result["seed_seconds"] = round(seeded, 2)
        result["smtp_accepted"] = smtp.accepted() - accepted0
        result["statuses"], result["not_sent_reasons"] = status_counts(self.url)
        result["accounts"] = bool(logins)
        result["sent_per_mailbox"] = sent_per_mailbox(self.url)
        result["code"] = code_version()
        result["code_changed_during_run"] = result["code"] != code
        result["complete"] = result["statuses"] == {"sent": n} and result["smtp_accepted"] == n
        cpu = result["cpu_ms_per_send"]
        self.log(
            f"{label}: {n} sends in {result['seconds']:.1f} s = {result['sends_per_s']:.0f}/s;"
            f" CPU ms/send flow {cpu['flow_process']}, smtp {cpu['smtp_server']},"
            f" pg {cpu['postgres']}, api {cpu['prefect_api']};"
            f" machine {result['machine_busy_pct']}% busy"
            + ("" if result["complete"] else f" INCOMPLETE {result['not_sent_reasons']}")
        )
        return result

    def bare_run(self, mode: str, label: str) -> dict[str, Any]:
        smtp = self.smtp
        assert smtp is not None, "run() starts the SMTP server before measure()"
        spec = {"smtp_port": smtp.port, "smtp_pid": smtp.pid, "n": self.args.sends}
        result = self.child("bare", {**spec, "mode": mode}, label)
        self.log(
            f"{label}: {result['msgs_per_s']:.0f} msgs/s, client {result['client_cpu_us_per_msg']}"
            f" µs CPU/msg, server {result['server_cpu_us_per_msg']} µs CPU/msg,"
            f" {result['message_bytes_mean']} B/msg, {result['refused']} refused"
        )
        return result

    def logins_run(self, mode: str, mailboxes: int, connections: int, label: str) -> dict[str, Any]:
        """smtplib over the variant's logins with its concurrency: `durable` on freshly seeded
        sends of the same database (checked all `sent` after), `build` and `prebuilt` without
        a database."""
        smtp = self.smtp
        assert smtp is not None, "run() starts the SMTP server before measure()"
        logins = self.logins[:mailboxes]
        if mode == "durable":
            seed_sends(self.url, self.args.sends, mailboxes, logins=logins, smtp_port=smtp.port)
        accepted0 = smtp.accepted()
        spec = {
            "mode": mode,
            "database_url": self.url,
            "smtp_port": smtp.port,
            "smtp_pid": smtp.pid,
            "postmaster_pid": self.postmaster_pid,
            "n": self.args.sends,
            "connections": connections,
            "logins": [(account.email, account.password) for account in logins],
        }
        result = self.child("logins", spec, label)
        result["smtp_accepted"] = smtp.accepted() - accepted0
        complete = result["smtp_accepted"] == self.args.sends and not result["refused"]
        if mode == "durable":
            result["statuses"], result["not_sent_reasons"] = status_counts(self.url)
            complete = complete and result["statuses"] == {"sent": self.args.sends}
        result["complete"] = complete
        cpu = result["cpu_ms_per_send"]
        self.log(
            f"{label}: {result['msgs_per_s']:.0f} msgs/s over {result['lanes']} lanes;"
            f" CPU ms/send client {cpu['flow_process']}, smtp {cpu['smtp_server']},"
            f" pg {cpu['postgres']}; machine {result['machine_busy_pct']}% busy"
            + ("" if complete else " INCOMPLETE")
        )
        return result

    def measure(self) -> None:
        args = self.args
        first_mailboxes, first_connections = args.variant[0]
        self.flow_run(first_mailboxes, first_connections, args.warmup_sends, "warm-up (discarded)")
        for r in range(args.repeats):
            for mailboxes, connections in args.variant:
                key = variant_key(mailboxes, connections)
                self.flow_run(mailboxes, connections, args.sends, f"flow {key} #{r + 1}")
                if (mailboxes, connections) == args.variant[0] and r == args.repeats - 1:
                    self.results["hand_over_explain"] = explain_hand_over(self.url)
                if args.accounts and not args.no_bare:
                    for mode in LOGIN_MODES:
                        label = f"bare {mode} {key} #{r + 1}"
                        self.logins_run(mode, mailboxes, connections, label)
            if not args.no_bare and not args.accounts:
                self.bare_run("prebuilt", f"bare (a) prebuilt bytes #{r + 1}")
                self.bare_run("build", f"bare (b) build_message per message #{r + 1}")
        if args.profile:
            path = self.logs / "flow-1-mailbox.prof"
            mailboxes, connections = args.variant[0]
            label = f"profiled {variant_key(mailboxes, connections)} (discarded)"
            result = self.flow_run(
                mailboxes, connections, args.sends, label, profile=str(path), probe=False
            )
            self.results["profile"] = {"file": str(path), **result.pop("profile")}

    def run(self) -> dict[str, Any]:
        """The SMTP server, then every run on one database and one Prefect API; the summary."""
        self.results["loadavg_start"] = load_triple()
        self.results["code_at_start"] = code_version()
        with self.database():
            self.results["postgres_settings"] = pg_settings(self.url)
            logins = {account.email: account.password for account in self.logins}
            self.smtp = SMTPServerProcess(self.child_script, logins)
            try:
                self.log(
                    f"SMTP server pid {self.smtp.pid} on 127.0.0.1:{self.smtp.port}"
                    + (f", AUTH required, {len(logins)} logins" if logins else "")
                )
                with self.prefect_api():
                    self.measure()
            finally:
                self.smtp.stop()
        self.results["loadavg_end"] = load_triple()
        self.results["code_at_end"] = code_version()
        self.results["code_changed_during_run"] = (
            self.results["code_at_start"] != self.results["code_at_end"]
        )
        self.results["summary"] = summarise(self.results)
        return self.results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=5_000, help="sends per run (5,000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each variant (3)")
    parser.add_argument("--batch-size", type=int, default=500, help="flow batch_size (500)")
    parser.add_argument(
        "--variant",
        action="append",
        metavar="MAILBOXES:CONNECTIONS",
        help="sending mailboxes and SMTP_MAX_CONNECTIONS (repeatable); default 1:1 and 4:4",
    )
    parser.add_argument(
        "--handover-group",
        type=int,
        help="DELIVERY_HANDOVER_GROUP: sends per handover commit; 1 with --accounts (the"
        " setting's default, issue 13), else 10 (as in the issue-11 figures)",
    )
    parser.add_argument(
        "--accounts",
        action="store_true",
        help="every sending mailbox a Mailbox row with its own AUTH login on the SMTP server"
        " (which then requires AUTH); the bare runs become the durable loop, smtplib and"
        " prebuilt bytes over the same logins with each variant's concurrency",
    )
    parser.add_argument("--warmup-sends", type=int, default=300, help="discarded first run")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare smtplib runs")
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="measured flow runs without the timing wrappers (no breakdown, no overhead)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="one more 1-mailbox run under cProfile"
    )
    add_output_arguments(parser)
    parser.add_argument("--child-flow", help=argparse.SUPPRESS)
    parser.add_argument("--child-bare", help=argparse.SUPPRESS)
    parser.add_argument("--child-logins", help=argparse.SUPPRESS)
    parser.add_argument("--child-smtp", metavar="LOGINS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variant = [
        tuple(int(part) for part in v.split(":")) for v in (args.variant or ["1:1", "4:4"])
    ]
    if any(not 1 <= mailboxes <= len(MAILBOXES) for mailboxes, _ in args.variant):
        parser.error(f"a variant has 1 to {len(MAILBOXES)} mailboxes")
    if args.handover_group is None:
        args.handover_group = 1 if args.accounts else 10
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A child imports only what its mode needs (Prefect and the flows are heavy).
    if args.child_smtp is not None:
        from benchmarks.harness.servers import serve_smtp

        serve_smtp(json.loads(args.child_smtp))
        return
    if args.child_flow:
        from benchmarks.delivery_children import child_flow

        emit(child_flow(json.loads(args.child_flow)))
        return
    if args.child_bare:
        from benchmarks.delivery_children import child_bare

        emit(child_bare(json.loads(args.child_bare)))
        return
    if args.child_logins:
        from benchmarks.delivery_children import child_logins

        emit(child_logins(json.loads(args.child_logins)))
        return
    start_parent()
    started = time.perf_counter()
    results = Bench(args).run()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    env = [f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"]
    if os.environ.get("DATABASE_URL"):
        url = make_url(os.environ["DATABASE_URL"]).render_as_string(hide_password=True)
        env.insert(0, f"DATABASE_URL={url}")
    python = os.path.relpath(sys.executable, ROOT)
    results["command"] = " ".join([*env, shlex.join([python, *sys.argv])])
    print_summary(results, args)
    if args.json:
        write_json(args.json, results)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
