"""The delivery benchmark's measured children: one flow run, and bare smtplib (the ceiling)."""

from __future__ import annotations

import asyncio
import cProfile
import email.policy
import os
import smtplib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import dependencies as deps
from benchmarks.delivery_probe import Probe, ThreadProfiles
from benchmarks.delivery_setup import (
    CAMPAIGN,
    MAILBOXES,
    PUBLIC_BASE_URL,
    SECRET,
    SENDER_NAME,
    content,
    send_id,
)
from benchmarks.harness.machine import ROOT, CPUMeter, proc_cpu
from core.delivery.message import OutgoingEmail, build_message
from core.delivery.report import COLUMNS, DeliveryColumn
from core.delivery.unsubscribe import load_secret, sign_token, unsubscribe_mailto, unsubscribe_url
from core.settings import Settings
from db.engine import DatabaseConfig, sessions_for


def child_flow(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured flow run; spec comes from the parent as JSON."""
    os.environ.update(
        DATABASE_URL=spec["database_url"],
        EMAIL_TRANSPORT="smtp",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(spec["smtp_port"]),
        SMTP_SECURITY="none",
        SMTP_MAX_CONNECTIONS=str(spec["max_connections"]),
        DELIVERY_HANDOVER_GROUP=str(spec["handover_group"]),
        UNSUBSCRIBE_SECRET=SECRET,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
    )
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD"):
        os.environ.pop(name, None)

    # Connect and check the revision before the clock starts, as the flow will.
    sessions_for(DatabaseConfig.from_settings(Settings()))
    probe = Probe()
    if spec.get("probe", True):
        probe.install()
    profiles = main_profile = None
    if spec.get("profile"):
        profiles, main_profile = ThreadProfiles(), cProfile.Profile()
        profiles.install()
    n = spec["n"]
    meter = CPUMeter(
        {"smtp_server": spec["smtp_pid"], "prefect_api": spec.get("prefect_server_pid")},
        spec.get("postmaster_pid"),
    )
    started = time.perf_counter()
    if main_profile is not None:
        main_profile.enable()
    report = asyncio.run(
        deps.send_scheduled_emails(
            as_of=datetime.now(UTC),
            campaign_id=CAMPAIGN,
            max_sends=n,
            batch_size=spec["batch_size"],
            max_wait_seconds=0,
            dry_run=False,
        )
    )
    if main_profile is not None:
        main_profile.disable()
    elapsed = time.perf_counter() - started
    cpu, busy_pct = meter.stop()
    counts = {column: report.total(column) for column in COLUMNS}
    sent = counts[DeliveryColumn.sent]

    def per_send_ms(name: str) -> float | None:
        seconds = cpu[name]
        return None if seconds is None else round(1000 * seconds / max(sent, 1), 3)

    result = {
        "kind": "flow",
        "mailboxes": spec["mailboxes"],
        "connections": spec["max_connections"],
        "n": n,
        "batch_size": spec["batch_size"],
        "seconds": elapsed,
        "sends_per_s": sent / elapsed,
        "report": counts,
        "cpu_ms_per_send": {
            name: per_send_ms(name)
            for name in ("flow_process", "smtp_server", "postgres", "prefect_api")
        },
        "machine_busy_pct": busy_pct,
        "probe": probe.summary(sent) if spec.get("probe", True) else None,
    }
    if profiles is not None and main_profile is not None:  # set together, from spec["profile"]
        result["profile"] = profiles.report(main_profile, Path(spec["profile"]))
    return result


def outgoing(i: int, now: datetime) -> Any:
    """Send i's OutgoingEmail exactly as a one-mailbox lane builds it."""
    row, sender = content(i), MAILBOXES[0]
    token = sign_token(load_secret(SECRET, ROOT / ".data"), send_id(i))
    return OutgoingEmail(
        send_id=send_id(i),
        from_email=sender,
        from_name=SENDER_NAME,
        reply_to=None,
        to_email=row["email"],
        to_name=f"{row['first']} {row['last']}",
        subject=row["subject"],
        text_body=row["body"],
        html=False,
        date=now,
        message_id=f"<{send_id(i)}@sender.example>",
        in_reply_to=None,
        references=(),
        unsubscribe_url=unsubscribe_url(PUBLIC_BASE_URL, token),
        unsubscribe_mailto=unsubscribe_mailto(sender, token),
    )


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """One smtplib connection, sendmail() of n messages: prebuilt bytes, or built per message."""
    n, prebuilt = spec["n"], spec["mode"] == "prebuilt"
    now = datetime.now(UTC)
    emails = [outgoing(i, now) for i in range(n)]
    payloads = [build_message(e).as_bytes(policy=email.policy.SMTP) for e in emails]
    sizes = [len(p) for p in payloads]
    if not prebuilt:
        payloads = []
    connection = smtplib.SMTP("127.0.0.1", spec["smtp_port"], timeout=30)
    connection.ehlo()
    refused = 0
    cpu0, smtp0 = time.process_time(), proc_cpu(spec["smtp_pid"])
    started = time.perf_counter()
    for i, outgoing_email in enumerate(emails):
        if prebuilt:
            payload = payloads[i]
        else:
            payload = build_message(outgoing_email).as_bytes(policy=email.policy.SMTP)
        if connection.sendmail(MAILBOXES[0], [outgoing_email.to_email], payload):
            refused += 1
    elapsed = time.perf_counter() - started
    cpu, smtp1 = time.process_time() - cpu0, proc_cpu(spec["smtp_pid"])
    connection.quit()
    return {
        "kind": "bare",
        "mode": spec["mode"],
        "n": n,
        "refused": refused,
        "seconds": elapsed,
        "msgs_per_s": (n - refused) / elapsed,
        "client_cpu_us_per_msg": round(1e6 * cpu / n, 1),
        "server_cpu_us_per_msg": (
            round(1e6 * (smtp1 - smtp0) / n, 1) if smtp0 is not None and smtp1 is not None else None
        ),
        "message_bytes_mean": round(sum(sizes) / len(sizes)),
    }
