"""Circuit breakers in the runs: the sweep before each delivery claim and after each ingestion,
and the Prefect event each pause emits for an automation to notify someone.

The sweep weighs every active mailbox and campaign with a hard bounce or complaint recorded in
the last 7 days, so events that arrived by any way (an ingestion run, the webhook inbox, the web
app writing them itself) pause what they take over the line before its next handover.
"""

import logging
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event

from core.breakers import BreakerLines
from db.base import utcnow
from db.engine import DatabaseConfig
from db.queries.breakers import Trip, trip_breakers
from tasks.database import database_task, in_transaction

# `campaign-pipeline.mailbox.paused` and `campaign-pipeline.campaign.paused`.
EVENT_PREFIX = "campaign-pipeline"


def paused_event(trip: Trip) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A pause as a Prefect event: its name, its resource and its payload of figures.

    Nothing in it is a secret or a lead's address: the mailbox's own address names it, the
    figures are counts and rates.
    """
    resource = {
        "prefect.resource.id": f"{EVENT_PREFIX}.{trip.scope}.{trip.id}",
        "prefect.resource.name": trip.name,
        f"{EVENT_PREFIX}.workspace-id": trip.workspace_id,
    }
    health = trip.health
    payload = {
        "scope": trip.scope.value,
        "id": trip.id,
        "name": trip.name,
        "workspace_id": trip.workspace_id,
        "reason": trip.reason,
        "since": trip.since.isoformat(),
        "sends": health.sends,
        "hard_bounces": health.hard_bounces,
        "complaints": health.complaints,
        "hard_bounce_rate": health.hard_bounce_rate,
        "complaint_rate": health.complaint_rate,
        "thresholds": trip.lines.model_dump(),
    }
    return f"{EVENT_PREFIX}.{trip.scope}.paused", resource, payload


def announce(
    trips: list[Trip], logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
) -> None:
    """Log each pause and emit its event (once: a trip is a pause this process made)."""
    for trip in trips:
        logger.warning(
            "%s %s (workspace %s) paused by its circuit breaker: %s",
            trip.scope,
            trip.name,
            trip.workspace_id,
            trip.reason,
        )
        event, resource, payload = paused_event(trip)
        emit_event(event=event, resource=resource, payload=payload)


@database_task("trip-circuit-breakers")
async def trip_circuit_breakers(database: DatabaseConfig, lines: BreakerLines) -> list[Trip]:
    """Pause every active mailbox (over `lines`) and campaign (over its own) whose recent hard
    bounces or complaints cross the line, and announce each pause."""
    trips = await in_transaction(
        database,
        lambda session: trip_breakers(session, now=utcnow(), mailbox_lines=lines, sweep=True),
    )
    announce(trips, get_run_logger())
    return trips
