"""Run process-campaign-sends in this process: a worker the fault suite can kill -9."""

import asyncio
import sys
from datetime import datetime

from flows.process_campaign_sends import process_campaign_sends


def main() -> None:
    """`python -m tests.support.run_flow AS_OF_ISO [BATCH_SIZE]`."""
    as_of = datetime.fromisoformat(sys.argv[1])
    batch_size = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    asyncio.run(process_campaign_sends(as_of=as_of, batch_size=batch_size))


if __name__ == "__main__":
    main()
