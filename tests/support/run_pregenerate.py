"""Run pregenerate-upcoming-steps in this process: a worker the fault suite can kill -9."""

import asyncio
import sys
from datetime import datetime

from flows.pregenerate_upcoming_steps import pregenerate_upcoming_steps


def main() -> None:
    """`python -m tests.support.run_pregenerate AS_OF_ISO`."""
    asyncio.run(pregenerate_upcoming_steps(as_of=datetime.fromisoformat(sys.argv[1])))


if __name__ == "__main__":
    main()
