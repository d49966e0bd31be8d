"""Crash points for the fault suite: the process dies here, as under kill -9, when asked to.

Set CAMPAIGN_PIPELINE_FAILPOINT to a point's name in a worker's environment; unset (always, in
production) every call is a dictionary lookup and nothing else.
"""

import os
import signal

FAILPOINT_ENV = "CAMPAIGN_PIPELINE_FAILPOINT"


def failpoint(name: str) -> None:
    """SIGKILL this process if the failpoint named in the environment is this one."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
