"""Meters of this machine: CPU of processes, RSS, load, how busy it is, and which code ran."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import resource
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def percentile(values: Any, q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a sequence, None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[Any]) -> Any:
    """The median of the values that are not None, None when there are none."""
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def rss_now_kib() -> int:
    """This process's resident set now, in KiB."""
    return _status_kib("VmRSS:")


def peak_rss_kib() -> int:
    """This process's own peak RSS in KiB (VmHWM). Not getrusage's ru_maxrss: Linux carries a
    parent's peak over fork and exec, so a child would report at least its parent's RSS."""
    return _status_kib("VmHWM:")


def proc_cpu(pid: int | None, *, children: bool = False) -> float | None:
    """User+system CPU seconds of a process (and of its reaped children), None if unreadable."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def pg_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of a local PostgreSQL: postmaster, its reaped children, and live children."""
    total = proc_cpu(postmaster, children=True)
    if total is None:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == postmaster:
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def loadavg() -> float:
    """The one-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def load_triple() -> list[float]:
    """The one-, five- and fifteen-minute load averages."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def machine_info(server_version: str) -> dict[str, Any]:
    """CPU, memory, Python, kernel and the PostgreSQL server version, for the record."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "ram_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "python": platform.python_version(),
        "postgresql": server_version,
        "kernel": platform.release(),
    }


def wait_until_quiet(limit_s: float) -> float:
    """Wait (up to limit_s) for two half-seconds with the machine under 20 % busy: the harness
    API server ingests the previous run's events and logs for a while after it ends. Returns
    the seconds waited."""
    started = time.perf_counter()
    quiet = 0
    while quiet < 2 and time.perf_counter() - started < limit_s:
        busy0, total0 = machine_jiffies()
        time.sleep(0.5)
        busy1, total1 = machine_jiffies()
        quiet = quiet + 1 if (busy1 - busy0) < 0.2 * max(total1 - total0, 1) else 0
    return time.perf_counter() - started


class RssSampler:
    """VmRSS every 0.5 s, to show whether memory grows with the number of leads."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.wait(0.5):
            self.samples.append((time.perf_counter() - started, rss_now_kib()))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, float | None]:
        """RSS a tenth of the way into the run and at its end, in MiB."""
        samples = self.samples
        return {
            "rss_at_10pct_mib": samples[len(samples) // 10][1] / 1024 if samples else None,
            "rss_at_end_mib": samples[-1][1] / 1024 if samples else None,
        }


class CPUMeter:
    """CPU seconds of this process, of other named processes and of PostgreSQL, and how busy
    the machine was, between construction and `stop()`."""

    def __init__(self, processes: dict[str, int | None], postmaster: int | None) -> None:
        self.processes = processes
        self.postmaster = postmaster
        self.start = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # Child processes that ended: a run's generation lanes, once its process pool shut down.
        ended = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = machine_jiffies()
        return {
            "flow_process": usage.ru_utime + usage.ru_stime,
            "lane_processes": ended.ru_utime + ended.ru_stime,
            **{name: proc_cpu(pid) for name, pid in self.processes.items()},
            "postgres": pg_cpu(self.postmaster),
            "busy": busy,
            "total": total,
        }

    def stop(self) -> tuple[dict[str, float | None], float]:
        """(CPU seconds by process since construction, None where unreadable; machine % busy)."""
        end = self._snapshot()
        seconds: dict[str, float | None] = {}
        for name in ("flow_process", "lane_processes", *self.processes, "postgres"):
            a, b = self.start[name], end[name]
            seconds[name] = None if a is None or b is None else b - a
        busy = end["busy"] - self.start["busy"]
        busy_pct = round(100 * busy / max(end["total"] - self.start["total"], 1), 1)
        return seconds, busy_pct

    def report(self) -> dict[str, Any]:
        """`stop()` as a run's `cpu_s`: seconds to 10 ms, machine % busy, and the core count."""
        seconds, busy_pct = self.stop()
        return {
            **{name: None if value is None else round(value, 2) for name, value in seconds.items()},
            "machine_busy_pct": busy_pct,
            "cores": os.cpu_count() or 1,
        }


def git(*argv: str) -> str:
    """A git command's output in the repository, stripped."""
    done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


PRODUCT_DIRS = ("core", "db", "tasks", "flows")


def code_version() -> dict[str, Any]:
    """The commit, the product files changed against it, and a digest of every product file,
    so a run that straddles another engineer's edit can be told apart."""
    digest = hashlib.sha256()
    for directory in PRODUCT_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--porcelain", "--", *PRODUCT_DIRS).splitlines(),
        "digest": digest.hexdigest()[:16],
    }
