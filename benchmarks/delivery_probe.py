"""Where a delivery flow run's time goes, measured in its child process: seconds in the functions
and statements tasks.delivery reaches (benchmarks/dependencies.py), and cProfile of all threads."""

from __future__ import annotations

import array
import cProfile
import functools
import io
import pstats
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, TypeVar, TypeVarTuple, Unpack

import anyio.to_thread
from anyio import CapacityLimiter
from sqlalchemy import event
from sqlalchemy.engine import Engine

from benchmarks import dependencies as deps
from benchmarks.harness.machine import ROOT
from core.settings import Settings
from db.engine import DatabaseConfig, sessions_for


class Probe:
    """Seconds spent in named functions and statements, summed over threads.

    Thin wrappers around the names tasks.delivery calls; the code under test is unchanged.
    Commits, pool pings and SQL statements are split by whether a delivery lane ran them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, list[float]] = {}
        self.local = threading.local()
        self.hand_over_s = array.array("d")
        self.lane_spans: list[tuple[float, float]] = []

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            entry = self.totals.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def where(self, name: str) -> str:
        return name + ("" if getattr(self.local, "lane", False) else " [outside lanes]")

    def timed(self, name: str, fn: Any, *, split: bool = False) -> Any:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(self.where(name) if split else name, time.perf_counter() - started)

        return wrapper

    def install(self) -> None:
        probe = self
        hand_over = deps.HAND_OVER_QUERY.original()

        def hand_over_wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return hand_over(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                probe.add("hand_over (locks + guarded UPDATE)", elapsed)
                with probe.lock:
                    probe.hand_over_s.append(elapsed)

        deps.HAND_OVER_QUERY.replace(hand_over_wrapper)
        for hook, label, split in deps.DELIVERY_TIMED:
            hook.replace(self.timed(label, hook.original(), split=split))
        # The pool's pre-ping, on the dialect of the sessions the flow will use.
        dialect = type(sessions_for(DatabaseConfig.from_settings(Settings())).kw["bind"].dialect)
        dialect.do_ping = self.timed("pool pre-ping", dialect.do_ping, split=True)

        run = deps.LANE_RUN.original()

        def run_wrapper(lane, handovers):
            probe.local.lane = True
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return run(lane, handovers)
            finally:
                ended = time.perf_counter()
                probe.local.lane = False
                probe.add("lane thread total", ended - started)
                probe.add("lane thread CPU", time.thread_time() - cpu)
                with probe.lock:
                    probe.lane_spans.append((started, ended))

        deps.LANE_RUN.replace(run_wrapper)

        def classify(statement: str) -> str:
            if "pg_advisory_xact_lock" in statement:
                return "SQL advisory locks (incl. wait)"
            if deps.HAND_OVER_SQL in statement:
                return "SQL hand-over UPDATE"
            if deps.RECORD_RESULTS_SQL in statement:
                return "SQL record_results UPDATE"
            if "SKIP LOCKED" in statement:
                return "SQL claim"
            return "SQL other"

        @event.listens_for(Engine, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):
            conn.info.setdefault("bench_t0", []).append(time.perf_counter())

        @event.listens_for(Engine, "after_cursor_execute")
        def after(conn, cursor, statement, parameters, context, executemany):
            started = conn.info["bench_t0"].pop()
            probe.add(probe.where(classify(statement)), time.perf_counter() - started)

    def lanes_wall(self) -> float:
        """Seconds during which at least one lane ran (the union of the lanes' spans)."""
        total, end = 0.0, float("-inf")
        for start, stop in sorted(self.lane_spans):
            if stop > end:
                total += stop - max(start, end)
                end = stop
        return total

    def summary(self, sent: int) -> dict[str, Any]:
        per_send = {k: round(1e6 * v[1] / max(sent, 1), 1) for k, v in self.totals.items()}
        calls = {k: int(v[0]) for k, v in self.totals.items()}
        tenth = max(1, len(self.hand_over_s) // 10)
        first, last = self.hand_over_s[:tenth], self.hand_over_s[-tenth:]
        return {
            "us_per_send": dict(sorted(per_send.items(), key=lambda kv: -kv[1])),
            "calls": calls,
            "lanes_wall_s": self.lanes_wall(),
            "lane_runs": len(self.lane_spans),
            "not_patched": [],  # every hook is checked by tests/unit/test_benchmarks.py
            "hand_over_us_first_10pct": round(1e6 * sum(first) / len(first), 1) if first else None,
            "hand_over_us_last_10pct": round(1e6 * sum(last) / len(last), 1) if last else None,
        }


T_Retval = TypeVar("T_Retval")
PosArgsT = TypeVarTuple("PosArgsT")


class RunSyncOptions(TypedDict, total=False):
    """anyio.to_thread.run_sync's keyword arguments, passed through as the caller gave them."""

    abandon_on_cancel: bool
    cancellable: bool | None
    limiter: CapacityLimiter | None


class ThreadProfiles:
    """cProfile is per thread: one profile for the main thread, one per worker call, merged."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def wrap(self, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            profile = cProfile.Profile()
            with self.lock:
                self.profiles.append(profile)
            profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.disable()

        return wrapper

    def install(self) -> None:
        run_sync = anyio.to_thread.run_sync

        async def run_sync_wrapper(
            func: Callable[[Unpack[PosArgsT]], T_Retval],
            *args: *PosArgsT,
            **kwargs: Unpack[RunSyncOptions],
        ) -> T_Retval:
            return await run_sync(self.wrap(func), *args, **kwargs)

        anyio.to_thread.run_sync = run_sync_wrapper
        deps.LANE_RUN.replace(self.wrap(deps.LANE_RUN.original()))

    def report(self, main: cProfile.Profile, path: Path, top: int = 25) -> dict[str, str]:
        stats = pstats.Stats(main)
        for profile in self.profiles:
            stats.add(profile)
        stats.dump_stats(path)
        out = {}
        for key in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(str(path), stream=text).sort_stats(key).print_stats(top)
            body = text.getvalue()
            for prefix in (str(ROOT) + "/", *(p + "/" for p in sys.path if "site-packages" in p)):
                body = body.replace(prefix, "")
            out[key] = body[body.find("   ncalls") :]
        return out
