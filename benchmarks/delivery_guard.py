"""The handover guard's own ceiling with many lanes of one campaign: no Prefect, no SMTP.

LANES threads, each a lane of its own mailbox on its own connection in autocommit, hand over
one send at a time (DELIVERY_HANDOVER_GROUP=1) through `hand_over_group`, on a database created
beside DATABASE_URL (else on the embedded server) and dropped at the end. Two ways, alternated
so the machine's noise falls on both: `locked`, each handover locking and counting the
campaign's counter row (what a lane without a reservation does), and `reserved`, each
handover spending room its lane reserved in the campaign's cap (what a lane does since issue
13). The difference is what the campaign's row costs when every lane queues on it.

    PYTHONPATH=. .venv/bin/python benchmarks/delivery_guard.py
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

from benchmarks.delivery_setup import CAMPAIGN, MAILBOXES, seed_sends  # noqa: E402
from benchmarks.harness.database import create_database, drop_database, server_url  # noqa: E402
from benchmarks.harness.machine import load_triple, median  # noqa: E402
from core.delivery.lane import HandoverGuard  # noqa: E402
from db.engine import make_engine, upgrade  # noqa: E402
from db.queries.delivery import claim_due_sends, hand_over_group, usage_today  # noqa: E402

MODES = ("locked", "reserved")


def one_run(url: str, mode: str, lanes: int, per_lane: int) -> float:
    """Handovers per second of `lanes` threads handing over `per_lane` sends each."""
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

    def lane(k: int) -> None:
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
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
                    results=[],
                    token=token,
                    now=datetime.now(UTC),
                    lease=timedelta(minutes=10),
                    campaign_reserved=None if mode == "locked" else per_lane - j,
                )
                assert handed == {send.sendId}, f"{send.sendId} refused"

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return lanes * per_lane / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=20, help="lanes, one mailbox each (20)")
    parser.add_argument("--per-lane", type=int, default=100, help="handovers per lane (100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (3)")
    args = parser.parse_args()
    if not 1 <= args.lanes <= len(MAILBOXES):
        parser.error(f"--lanes is 1 to {len(MAILBOXES)}")
    admin, name = server_url(), "cp_bench_delivery_guard"
    url = create_database(admin, name)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        upgrade(url)
        for _ in range(args.repeats):
            for mode in MODES:
                rate = one_run(url, mode, args.lanes, args.per_lane)
                rates[mode].append(rate)
                print(f"{mode:8} {rate:6.0f} handovers/s  (load {load_triple()[0]})", flush=True)
    finally:
        drop_database(admin, name)
    for mode in MODES:
        values = ", ".join(f"{v:.0f}" for v in rates[mode])
        print(f"median {mode:8} {median(rates[mode]):6.0f} handovers/s  ({values})")


if __name__ == "__main__":
    main()
