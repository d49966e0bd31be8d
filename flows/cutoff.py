"""A run's time cutoff, shared by the flows that take one."""

from datetime import UTC, datetime

from prefect.runtime import flow_run


def run_cutoff(given: datetime | None) -> datetime:
    """The given moment (naive means UTC), else the run's scheduled start, so a retry keeps it."""
    if given is not None:
        return given if given.tzinfo else given.replace(tzinfo=UTC)
    scheduled = flow_run.scheduled_start_time
    return datetime.fromtimestamp(scheduled.timestamp(), tz=UTC)
