"""`campaign-pipeline`: database, campaign and enrolment commands, the demo, and Prefect."""

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.exc import OperationalError

from cli.context import connect, err, fail, load_yaml, out
from cli.demo import lead_status_counts, run_delivery, run_generation, seed_demo, send_times
from cli.mailboxes import campaign_pause, campaign_resume, mailbox_app
from cli.preview import campaign_preview
from cli.review import review_app
from core.campaigns.campaign_file import CampaignFileError, parse_campaign
from core.campaigns.lead_import import LeadFileError, read_leads_csv
from core.delivery.report import COLUMNS as DELIVERY_COLUMNS
from core.generation.report import COLUMNS, CampaignCounts
from core.settings import Settings, TransportKind, get_settings
from db.base import utcnow
from db.embedded import stop_embedded
from db.engine import DatabaseNotReadyError, current_revision, head_revision, unit_of_work, upgrade
from db.queries.campaigns import CampaignExistsError, create_campaign, get_campaign
from db.queries.enrolment import enrol_lead_rows
from deployments.limits import DEFAULT_LLM_REQUESTS_PER_MINUTE
from deployments.spec import PrefectYamlError, read_deployments, work_pool_name
from web.app import log_config, make_app_from_settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False
)
db_app = typer.Typer(no_args_is_help=True, help="The database: migrate, locate, stop.")
campaign_app = typer.Typer(no_args_is_help=True, help="Campaigns and their steps.")
prefect_app = typer.Typer(
    no_args_is_help=True, help="Prefect: the work pool and limits the deployments need."
)
app.add_typer(db_app, name="db")
app.add_typer(campaign_app, name="campaign")
app.add_typer(prefect_app, name="prefect")
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(review_app, name="review")
campaign_app.command("pause")(campaign_pause)
campaign_app.command("resume")(campaign_resume)
campaign_app.command("preview")(campaign_preview)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Run the Alembic migrations (up to head by default)."""
    database = connect(migrate=False)
    upgrade(database.url, revision)
    out.print(f"database at revision {current_revision(database.engine)} ({database.where})")


@db_app.command("url")
def db_url(
    show_password: Annotated[bool, typer.Option(help="Print the password too.")] = False,
) -> None:
    """Print the database URL (for psql, or DATABASE_URL elsewhere), and where it lives."""
    database = connect(migrate=False)
    url = database.engine.url.set(drivername="postgresql")
    out.print(url.render_as_string(hide_password=not show_password))
    err.print(database.where)


@db_app.command("status")
def db_status() -> None:
    """Say which database is in use and whether it is migrated."""
    database = connect(migrate=False)
    current, head = current_revision(database.engine), head_revision()
    state = "up to date" if current == head else f"needs `db upgrade` ({current} -> {head})"
    out.print(f"{database.where}\nrevision: {current or 'none'} ({state})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL (the next command starts it again)."""
    settings = get_settings()
    if settings.database_url is not None:
        raise fail("DATABASE_URL is set; the embedded PostgreSQL is not in use")
    stopped = stop_embedded(settings.embedded_pg_dir)
    out.print(
        f"embedded PostgreSQL in {settings.embedded_pg_dir} "
        + ("stopped" if stopped else "was not running")
    )


@campaign_app.command("create")
def campaign_create(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False)],
) -> None:
    """Create a campaign with its steps and sendingRules from a YAML (or JSON) file."""
    try:
        spec = parse_campaign(load_yaml(file), source=str(file))
    except CampaignFileError as exc:
        raise fail(f"{exc}\nnothing was written") from None
    database = connect()
    try:
        with unit_of_work(database.sessions) as session:
            campaign = create_campaign(session, spec)
    except CampaignExistsError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"created campaign {campaign.id} ({spec.name!r}, {len(spec.steps)} steps, "
        f"status {spec.status.value})",
    )


@app.command("enroll")
def enroll(
    campaign_id: Annotated[str, typer.Option("--campaign", help="Campaign id.")],
    csv: Annotated[Path, typer.Option("--csv", exists=True, dir_okay=False)],
    encoding: Annotated[str, typer.Option(help="The file's text encoding.")] = "utf-8",
) -> None:
    """Create or update leads from a CSV and enrol them; bad rows are reported, good ones kept."""
    try:
        leads = read_leads_csv(csv.read_bytes(), encoding=encoding)
    except LookupError:
        raise fail(f"unknown encoding {encoding!r}") from None
    except LeadFileError as exc:
        raise fail(f"{csv}: {exc}; nothing was enrolled") from None
    database = connect()
    with unit_of_work(database.sessions) as session:
        campaign = get_campaign(session, campaign_id)
        if campaign is None:
            raise fail(f"no campaign with id {campaign_id!r}; nothing was enrolled")
        result = enrol_lead_rows(session, campaign, leads.rows(), utcnow())
    for problem in leads.problems:
        err.print(f"{csv}: {problem}")
    out.print(
        f"enrolled {result.enrolled}, already enrolled {result.already_enrolled}, "
        f"rejected {len(leads.problems)} (leads created or updated: "
        f"{result.leads_created_or_updated})",
    )
    if leads.problems and result.enrolled + result.already_enrolled == 0:
        raise typer.Exit(1)


@app.command("demo")
def demo(
    reset: Annotated[bool, typer.Option(help="Delete the demo campaign first.")] = False,
) -> None:
    """Seed a demo campaign and 20 leads, run process-campaign-sends then send-scheduled-emails."""
    database = connect()
    out.print(f"database: {database.where}")
    seed = seed_demo(database, reset=reset)
    out.print(
        f"campaign {seed.campaign_id}: {'created' if seed.created else 'already there'}; "
        f"enrolled {seed.enrolment.enrolled}, already enrolled {seed.enrolment.already_enrolled}",
    )
    counts = run_generation(seed.campaign_id)
    for row in counts.values() or [CampaignCounts(campaign_id=seed.campaign_id)]:
        out.print(
            f"process-campaign-sends, campaign {row.campaign_id}: "
            + ", ".join(f"{column.replace('_', ' ')} {getattr(row, column)}" for column in COLUMNS)
        )
    with database.sessions() as session:
        statuses = lead_status_counts(session, seed.campaign_id)
    out.print("leads by status: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
    report = run_delivery(seed.campaign_id)
    out.print(
        "send-scheduled-emails: "
        + ", ".join(f"{column} {report.total(column)}" for column in DELIVERY_COLUMNS)
    )
    with database.sessions() as session:
        sends = send_times(session, seed.campaign_id)
    if sends:
        out.print(f"sends still scheduled: {len(sends)}, next at {min(sends).isoformat()} (UTC)")
    settings = get_settings()
    if settings.transport is TransportKind.outbox:
        written = sorted(settings.outbox_dir.glob("*/*.eml"))
        out.print(f"outbox: {len(written)} .eml files under {settings.outbox_dir}")
        if written:
            out.print(f"latest: {max(written, key=lambda path: path.stat().st_mtime)}")


@app.command("web")
def web(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve the unsubscribe links (RFC 8058 one-click and a confirmation page), the webhooks,
    previews (with PIPELINE_API_TOKEN) and /healthz."""
    settings = _settings()
    previews = bool(settings.pipeline_api_token and settings.pipeline_api_token.get_secret_value())
    generation_cache = None
    if previews and settings.openai_api_key is not None:
        # Previews share the flows' result storage: Prefect is imported only when they can pay.
        from tasks.generation import cache_outside_runs

        generation_cache = asyncio.run(cache_outside_runs())
    try:
        application = make_app_from_settings(generation_cache)
    except OperationalError as exc:
        raise fail(f"cannot reach the database: {exc.orig}") from None
    except (DatabaseNotReadyError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    # Binding here, not inside uvicorn, turns a taken port into one line instead of a log record.
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    preview_path = ", /campaigns/{id}/steps/{stepOrder}/preview" if previews else ""
    out.print(
        f"serving http://{host}:{port}: /unsubscribe/…, /webhooks/{{provider}}{preview_path},"
        " /healthz (Ctrl+C stops)"
    )
    server = uvicorn.Server(uvicorn.Config(application, log_config=log_config()))
    # uvicorn shuts down gracefully on Ctrl+C, then re-raises it; that is a normal stop here.
    with listener, contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listener])


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        raise fail(str(exc)) from None


@prefect_app.command("setup")
def prefect_setup(
    llm_rpm: Annotated[
        int | None,
        typer.Option(
            "--llm-rpm",
            min=1,
            help="LLM requests per minute for the LLM_RATE_LIMIT_NAME limit; given, an existing"
            f" limit is updated to it. Default for a new one: {DEFAULT_LLM_REQUESTS_PER_MINUTE}.",
        ),
    ] = None,
    llm_burst: Annotated[
        int | None,
        typer.Option(
            "--llm-burst",
            min=1,
            help="Requests at once before the rate applies; default for a new limit: a tenth"
            " of the requests per minute.",
        ),
    ] = None,
) -> None:
    """Create the work pool of prefect.yaml (type process) and the flows' limits; repeatable."""
    from deployments.setup import PrefectAPIError, setup

    settings = _settings()
    try:
        pool = work_pool_name(read_deployments())
        outcomes = asyncio.run(setup(settings, llm_per_minute=llm_rpm, llm_burst=llm_burst))
    except (PrefectAPIError, PrefectYamlError) as exc:
        raise fail(str(exc)) from None
    for outcome in outcomes:
        out.print(outcome.line())
    out.print(
        "next: `prefect deploy --all` in the checkout, then"
        f" `prefect worker start --pool {pool}` (or `campaign-pipeline serve` instead of both)"
    )


@app.command("serve")
def serve(
    limit: Annotated[
        int | None, typer.Option(min=1, help="Flow runs at once (default: no limit).")
    ] = None,
) -> None:
    """Serve the deployments of prefect.yaml here, instead of `prefect deploy` and a worker."""
    from deployments.serve import build_deployments, serve_deployments
    from deployments.setup import PrefectAPIError, require_api

    _settings()
    try:
        asyncio.run(require_api())
        deployments = build_deployments()
    except (PrefectAPIError, PrefectYamlError) as exc:
        raise fail(str(exc)) from None
    except ImportError as exc:
        raise fail(f"cannot import a flow of prefect.yaml: {exc}") from None
    database = connect()
    out.print(f"database: {database.where}")
    database.engine.dispose()
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
    out.print(
        f"serving {names}; Ctrl+C stops, and their schedules pause until they are served or"
        " deployed again"
    )
    serve_deployments(deployments, limit=limit)


def main() -> None:
    """Console-script entry point: errors end as one line on stderr, never a traceback."""
    # The machine may have no route out; Prefect's telemetry would only log a failure.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        app()
    except OperationalError as exc:
        err.print(f"[red]error:[/red] cannot reach the database: {exc.orig}")
        raise SystemExit(1) from None
