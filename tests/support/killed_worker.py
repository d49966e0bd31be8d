"""Run a worker module in a subprocess with a crash point, and check that it died by SIGKILL."""

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from core.failpoints import FAILPOINT_ENV

ROOT = Path(__file__).resolve().parents[2]


def run_killed_worker(
    module: str,
    args: Sequence[str],
    point: str,
    settings: Mapping[str, str],
    *,
    unset: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` with `settings` (and without `unset`) until `point` kills it."""
    inherited = {k: v for k, v in os.environ.items() if k not in unset}
    env = {
        **inherited,
        **settings,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        FAILPOINT_ENV: point,
    }
    worker = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr[-2000:]
    return worker
