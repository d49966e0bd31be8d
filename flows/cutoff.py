"""A run's moments from its parameters: naive means UTC, and an empty cutoff is the run's
scheduled start. Shared by every flow that takes a moment.
"""

from datetime import UTC, datetime

from prefect.runtime import flow_run


def aware(moment: datetime | None) -> datetime | None:
    """The moment with a zone (a naive one is UTC), or None."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def run_cutoff(given: datetime | None) -> datetime:
    """The given moment, else the run's scheduled start, so a retry keeps it."""
    found = aware(given)
    if found is not None:
        return found
    scheduled = flow_run.scheduled_start_time
    return datetime.fromtimestamp(scheduled.timestamp(), tz=UTC)
