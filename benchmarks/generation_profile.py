"""py-spy profiles of a flow run: where the main thread's samples go, by component."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.dependencies import PROFILED

# Where CPU goes: the innermost frame that belongs to a library or to this project names the
# component (stdlib frames such as json, re or ssl count for the library that called them).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("(openai/", "openai client (build request, parse response)"),
    ("(httpx2/", "httpx2/httpcore2 (HTTP)"),
    ("(httpcore2/", "httpx2/httpcore2 (HTTP)"),
    ("(httpx/", "httpx2/httpcore2 (HTTP)"),
    ("(httpcore/", "httpx2/httpcore2 (HTTP)"),
    ("(h11/", "httpx2/httpcore2 (HTTP)"),
    ("(anyio/", "anyio (HTTP and thread glue)"),
    ("(prefect/results.py", "prefect result store (per-lead cache)"),
    ("(prefect/filesystems.py", "prefect result store (per-lead cache)"),
    ("(prefect/serializers.py", "prefect result store (per-lead cache)"),
    ("(prefect/utilities/collections.py", "prefect visit_collection (task inputs/outputs)"),
    ("(prefect/", "prefect other (engine, states, events, logs)"),
    ("(sqlalchemy/", "sqlalchemy"),
    ("(psycopg", "psycopg"),
    ("(pydantic", "pydantic"),
    ("(pydantic_core", "pydantic"),
    ("(email_validator/", "email_validator"),
    ("(core/", "project core/ (prepare, render, prompt, gate)"),
    ("(db/", "project db/ tasks/ flows/"),
    ("(tasks/", "project db/ tasks/ flows/"),
    ("(flows/", "project db/ tasks/ flows/"),
    ("<frozen importlib", "imports"),
)
# Leaf frames of a thread that is waiting, not running.
IDLE_LEAVES = (
    "EpollSelector.select (",
    "Condition.wait (",
    "_worker (concurrent/futures/thread.py",
    "WorkerThread.run (anyio/",
    "heartbeat_loop (",
    "Popen._wait (",
    "Event.wait (",
)
# Functions whose inclusive share of the flow's main-thread samples is reported: the project's
# (named from the functions themselves, in benchmarks/dependencies.py) and the libraries'.
INCLUSIVE: tuple[tuple[str, str], ...] = (
    *PROFILED,
    ("validate_email (", "email_validator.validate_email (in prepare)"),
    ("collect_task_run_inputs", "prefect collect_task_run_inputs (task graph inputs)"),
    ("_resolve_parameters (", "prefect _resolve_parameters (task parameters)"),
    ("(logging/", "logging (incl. Prefect's API log handler)"),
    ("visit_collection (prefect/", "prefect visit_collection (task inputs/outputs)"),
    ("(prefect/task_engine.py", "prefect task engine (any frame)"),
)


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, name in COMPONENTS:
            if needle in frame:
                return name
    if any("(asyncio/" in frame or "(selectors.py" in frame for frame in frames):
        return "asyncio event loop"
    return "other (stdlib)"


def summarise_profile(raw: Path) -> dict[str, Any]:
    """Shares of py-spy samples (raw format, --threads --idle) during the flow run.

    Main thread: only samples inside the flow's asyncio.run (stacks through run_until_complete),
    split into idle (waiting in epoll) and busy, busy by component and by a few inclusive
    functions. Other threads: busy samples per thread kind, to show what competes for the GIL.
    """
    main: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    waiting_on_db = 0
    main_total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else "unnamed"
        idle = any(leaf in frames[-1] for leaf in IDLE_LEAVES)
        if thread == "MainThread":
            if not any("run_until_complete" in frame for frame in frames):
                continue  # imports and fake-server start/stop, before and after the flow
            main_total += count
            name = "idle (event loop waiting in epoll)" if idle else _component(frames)
            main[name] = main.get(name, 0) + count
            if not idle:
                for marker, label in INCLUSIVE:
                    if any(marker in frame for frame in frames):
                        inclusive[label] = inclusive.get(label, 0) + count
        elif not idle:
            if "Connection.wait (psycopg" in frames[-1]:
                waiting_on_db += count
                continue
            kind = re.sub(r"[\s_-]*\d+$", "", thread.split(" (")[0])
            threads[kind] = threads.get(kind, 0) + count

    def shares(counts: dict[str, int]) -> dict[str, float]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])
        return {name: round(100 * c / max(main_total, 1), 1) for name, c in ordered}

    return {
        "main_thread_flow_samples": main_total,
        "note": "percentages are of the main thread's samples during the flow run",
        "main_thread_pct": shares(main),
        "main_thread_inclusive_pct": shares(inclusive),
        "other_threads_busy_pct": shares(threads),
        "db_wait_pct": round(100 * waiting_on_db / max(main_total, 1), 1),
    }
