"""The delivery benchmark's measured children: one flow run, and bare smtplib (the ceiling)."""

from __future__ import annotations

import asyncio
import cProfile
import email.policy
import os
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

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
from benchmarks.harness.database import libpq
from benchmarks.harness.machine import ROOT, CPUMeter, proc_cpu
from core.delivery.message import OutgoingEmail, build_message, message_id_for
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
    # With --accounts, each Mailbox row's password reference (env:NAME) resolves here.
    os.environ.update(spec.get("passwords", {}))

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


def outgoing(i: int, now: datetime, sender: str = MAILBOXES[0]) -> Any:
    """Send i's OutgoingEmail exactly as a lane of mailbox `sender` builds it."""
    row = content(i)
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
        message_id=message_id_for(send_id(i), sender),
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


# The durable loop's two writes per message, each its own transaction (autocommit, so one
# round trip and one commit each): the row is `sending` before the message leaves, and the
# server's answer is committed after. The least a sender can write and still never send twice
# nor lose track of a message; the flow's handover also checks stops, suppression, both caps
# and the claim token, and carries the previous result in the same statement.
DURABLE_SENDING = """
    UPDATE "EmailSend"
    SET status = 'sending', mailbox = %s, "providerMessageId" = %s, attempts = attempts + 1,
        "attemptedAt" = now() AT TIME ZONE 'UTC', "updatedAt" = now() AT TIME ZONE 'UTC'
    WHERE id = %s AND status = 'scheduled'
"""
DURABLE_RESULT = """
    UPDATE "EmailSend"
    SET status = %s, "sentAt" = now() AT TIME ZONE 'UTC', "updatedAt" = now() AT TIME ZONE 'UTC'
    WHERE id = %s AND status = 'sending'
"""


def login_lanes(n: int, mailboxes: int, connections: int) -> list[tuple[int, list[int]]]:
    """(mailbox, its sends) per lane, laid out as the flow lays out its lanes: send i from
    mailbox i % mailboxes, one lane per mailbox, and connections beyond one per mailbox split
    the first mailboxes' sends further (core.delivery.lane.split_ungapped's rule)."""
    spare = max(connections - mailboxes, 0)
    lanes: list[tuple[int, list[int]]] = []
    for mailbox in range(mailboxes):
        sends = list(range(mailbox, n, mailboxes))
        ways = min(spare + 1, len(sends)) if len(sends) > 1 else 1
        spare -= ways - 1
        lanes.extend((mailbox, sends[k::ways]) for k in range(ways))
    return [lane for lane in lanes if lane[1]]


def child_logins(spec: dict[str, Any]) -> dict[str, Any]:
    """smtplib over the same logins and with the same concurrency as the flow's lanes: each
    lane a thread with its own SMTP connection (EHLO, AUTH) and, when durable, its own database
    connection, at most `connections` at a time.

    Modes: `durable` builds each message, commits `sending`, sends, commits the result (what
    the flow's ≥ 70 % target is measured against); `build` builds and sends, no database;
    `prebuilt` sends bytes built before the clock started (the ceiling). Connecting and logging
    in are inside the clock, as the flow's lanes do both inside theirs.
    """
    n, mode = spec["n"], spec["mode"]
    durable, prebuilt = mode == "durable", mode == "prebuilt"
    logins: list[tuple[str, str]] = [tuple(login) for login in spec["logins"]]
    now = datetime.now(UTC)
    senders = [logins[i % len(logins)][0] for i in range(n)]
    emails = [outgoing(i, now, senders[i]) for i in range(n)]
    payloads = [build_message(e).as_bytes(policy=email.policy.SMTP) for e in emails]
    sizes = [len(p) for p in payloads]
    if not prebuilt:
        payloads = []
    lanes = login_lanes(n, len(logins), spec["connections"])
    url = libpq(spec["database_url"]) if durable else None

    def lane(mailbox: int, sends: list[int]) -> int:
        user, password = logins[mailbox]
        refused = 0
        database = psycopg.connect(url, autocommit=True) if url else None
        connection = smtplib.SMTP("127.0.0.1", spec["smtp_port"], timeout=30)
        try:
            connection.ehlo()
            connection.login(user, password)
            for i in sends:
                outgoing_email = emails[i]
                if prebuilt:
                    payload = payloads[i]
                else:
                    payload = build_message(outgoing_email).as_bytes(policy=email.policy.SMTP)
                if database is not None:
                    marked = database.execute(
                        DURABLE_SENDING, (user, outgoing_email.message_id, send_id(i))
                    )
                    assert marked.rowcount == 1, f"{send_id(i)} was not scheduled"
                failed = connection.sendmail(user, [outgoing_email.to_email], payload)
                refused += bool(failed)
                if database is not None:
                    status = "failed" if failed else "sent"
                    database.execute(DURABLE_RESULT, (status, send_id(i)))
            connection.quit()
        finally:
            connection.close()
            if database is not None:
                database.close()
        return refused

    meter = CPUMeter({"smtp_server": spec["smtp_pid"]}, spec.get("postmaster_pid"))
    started = time.perf_counter()
    with ThreadPoolExecutor(min(spec["connections"], len(lanes)), "bare-lane") as pool:
        futures = [pool.submit(lane, mailbox, sends) for mailbox, sends in lanes]
        refused = sum(future.result() for future in futures)
    elapsed = time.perf_counter() - started
    cpu, busy_pct = meter.stop()
    return {
        "kind": "bare",
        "mode": mode,
        "mailboxes": len(logins),
        "connections": spec["connections"],
        "lanes": len(lanes),
        "n": n,
        "refused": refused,
        "seconds": elapsed,
        "msgs_per_s": (n - refused) / elapsed,
        "cpu_ms_per_send": {
            name: None if seconds is None else round(1000 * seconds / n, 3)
            for name, seconds in cpu.items()
        },
        "machine_busy_pct": busy_pct,
        "message_bytes_mean": round(sum(sizes) / len(sizes)),
    }
