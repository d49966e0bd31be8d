"""Run send-scheduled-emails in this process: a delivery worker the fault suite can kill -9."""

import asyncio
import sys

from flows.send_scheduled_emails import send_scheduled_emails


def main() -> None:
    """`python -m tests.support.run_delivery [BATCH_SIZE [MAX_SENDS]]`."""
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    max_sends = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    asyncio.run(
        send_scheduled_emails(batch_size=batch_size, max_sends=max_sends, max_wait_seconds=0)
    )


if __name__ == "__main__":
    main()
