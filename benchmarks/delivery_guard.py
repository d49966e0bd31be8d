"""The handover guard's own ceiling with many lanes of one campaign: no Prefect, no SMTP.

LANES threads, each a lane of its own mailbox on its own connection in autocommit, hand over
one send at a time (DELIVERY_HANDOVER_GROUP=1) through `hand_over_group`, on a database created
beside DATABASE_URL (else on the embedded server) and dropped at the end. Two ways, alternated
so the machine's noise falls on both: `locked`, each handover locking and counting the
campaign's counter row (what a lane without a reservation does), and `reserved`, each
handover spending room its lane reserved in the campaign's cap (what a lane does since issue
13). The difference is what the campaign's row costs when every lane queues on it.

With --floor, the two ways are the per-message database work of the flow and of the durable loop
in benchmarks/delivery.py, on the same warm connections, with CPU per message of this process
and of PostgreSQL: `lane`, the handover statement carrying the previous send's result, as a lane
runs it (reserved room, one statement and one commit per send), and `durable`, the loop's two
plain updates (`sending`, then the result: two commits). No SMTP and no Prefect, so the
difference is what the guard costs on its own, the part of the flow no batching removes.

    PYTHONPATH=. .venv/bin/python benchmarks/delivery_guard.py [--floor]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session  # noqa: E402

from benchmarks.delivery_children import DURABLE_RESULT, DURABLE_SENDING  # noqa: E402
from benchmarks.delivery_setup import CAMPAIGN, MAILBOXES, seed_sends  # noqa: E402
from benchmarks.harness.database import (  # noqa: E402
    create_database,
    drop_database,
    server_facts,
    server_url,
)
from benchmarks.harness.machine import CPUMeter, load_triple, median  # noqa: E402
from core.delivery.lane import HandoverGuard  # noqa: E402
from core.statuses import EmailSendStatus  # noqa: E402
from db.engine import make_engine, upgrade  # noqa: E402
from db.queries.delivery import (  # noqa: E402
    ResultRow,
    claim_due_sends,
    hand_over_group,
    record_results,
    usage_today,
)

MODES = ("locked", "reserved")
FLOOR_MODES = ("lane", "durable")


def one_run(
    url: str, mode: str, lanes: int, per_lane: int, postmaster: int | None
) -> tuple[float, dict[str, float | None]]:
    """Handovers per second of `lanes` threads handing over `per_lane` sends each, and CPU ms
    per handover of this process (`client`) and of PostgreSQL."""
    seed_sends(url, lanes * per_lane, lanes)
    engine = make_engine(url, pool_size=lanes)
    now = datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with Session(engine) as session, session.begin():
        token, due = claim_due_sends(
            session,
            cutoff=now,
            now=now,
            limit=lanes * per_lane,
            worker="bench",
            lease=timedelta(minutes=10),
        )
        usage_today(
            session, campaigns={CAMPAIGN: day}, mailboxes={m: day for m in MAILBOXES[:lanes]}
        )

    # Connected before the clock starts, as a lane's pooled connection is.
    connections = [engine.connect() for _ in range(lanes)]
    for connection in connections:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql("SELECT 1")

    def lane(k: int) -> None:
        connection = connections[k]
        previous: list[ResultRow] = []
        if mode == "durable":
            for send in due[k::lanes]:
                marked = connection.exec_driver_sql(
                    DURABLE_SENDING, (MAILBOXES[k], f"<{send.sendId}@x>", send.sendId)
                )
                assert marked.rowcount == 1, f"{send.sendId} was not scheduled"
                connection.exec_driver_sql(DURABLE_RESULT, ("sent", send.sendId))
            return
        for j, send in enumerate(due[k::lanes]):
            guard = HandoverGuard(
                campaign_id=CAMPAIGN,
                mailbox=MAILBOXES[k],
                sends=((send.sendId, f"<{send.sendId}@sender.example>"),),
                day=day,
                mailbox_limit=1_000_000,
                campaign_limit=1_000_000,
                min_gap=timedelta(0),
            )
            _, handed = hand_over_group(
                connection,
                guard,
                results=previous,
                token=token,
                now=datetime.now(UTC),
                lease=timedelta(minutes=10),
                campaign_reserved=None if mode == "locked" else per_lane - j,
            )
            assert handed == {send.sendId}, f"{send.sendId} refused"
            if mode == "lane":  # the result rides on the next handover, as in a lane
                previous = [ResultRow(send.sendId, EmailSendStatus.sent)]
        if previous:
            now = datetime.now(UTC)
            record_results(connection, token=token, now=now, results=previous)

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
    meter = CPUMeter({}, postmaster)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu, _ = meter.stop()
    for connection in connections:
        connection.close()
    engine.dispose()
    n = lanes * per_lane
    ms = {
        "client": 1000 * cpu["flow_process"] / n if cpu["flow_process"] is not None else None,
        "postgres": 1000 * cpu["postgres"] / n if cpu["postgres"] is not None else None,
    }
    return n / elapsed, ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=20, help="lanes, one mailbox each (20)")
    parser.add_argument("--per-lane", type=int, default=100, help="handovers per lane (100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (3)")
    parser.add_argument(
        "--floor", action="store_true", help="the lane's statement against the durable loop's"
    )
    args = parser.parse_args()
    modes = FLOOR_MODES if args.floor else MODES
    if not 1 <= args.lanes <= len(MAILBOXES):
        parser.error(f"--lanes is 1 to {len(MAILBOXES)}")
    admin, name = server_url(), "cp_bench_delivery_guard"
    url = create_database(admin, name)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, dict[str, list[float]]] = {m: {"client": [], "postgres": []} for m in modes}
    try:
        upgrade(url)
        postmaster = server_facts(url)[1]
        for _ in range(args.repeats):
            for mode in modes:
                rate, ms = one_run(url, mode, args.lanes, args.per_lane, postmaster)
                rates[mode].append(rate)
                for process, value in ms.items():
                    if value is not None:
                        cpu[mode][process].append(value)
                shown = ", ".join(f"{k} {v:.3f}" for k, v in ms.items() if v is not None)
                print(
                    f"{mode:8} {rate:6.0f} handovers/s; CPU ms per message: {shown}"
                    f"  (load {load_triple()[0]})",
                    flush=True,
                )
    finally:
        drop_database(admin, name)
    for mode in modes:
        values = ", ".join(f"{v:.0f}" for v in rates[mode])
        shown = ", ".join(f"{k} {median(v):.3f}" for k, v in cpu[mode].items() if v)
        print(
            f"median {mode:8} {median(rates[mode]):6.0f} handovers/s  ({values});"
            f" CPU ms per message: {shown}"
        )


if __name__ == "__main__":
    main()
