"""Run a worker helper's `main()` only once every worker is ready, so their flow runs overlap.

`python -m tests.support.start_together GATE_DIR NAME MODULE [ARGS...]` imports MODULE (the
slow part of a worker's start: Prefect, SQLAlchemy, openai), writes `GATE_DIR/NAME.ready`, waits
for `GATE_DIR/go`, then calls `MODULE.main()` with ARGS as its command line. The test starts
all its workers, waits for every `.ready` file and then writes `go`: without the gate, a worker
that takes longer to import may find the work already done by the others.
"""

import importlib
import sys
import time
from pathlib import Path

GO = "go"
WAIT_LIMIT_SECONDS = 300


def main() -> None:
    """`python -m tests.support.start_together GATE_DIR NAME MODULE [ARGS...]`."""
    gate, name, module, *args = sys.argv[1:]
    target = importlib.import_module(module)
    gate_dir = Path(gate)
    (gate_dir / f"{name}.ready").touch()
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while not (gate_dir / GO).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: no {GO} signal in {gate_dir} after {WAIT_LIMIT_SECONDS}s")
        time.sleep(0.01)
    sys.argv = [module, *args]
    target.main()


if __name__ == "__main__":
    main()
