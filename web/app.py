"""The web app: unsubscribe pages, engagement webhooks, previews and a health check, from settings.

The routes live beside what they do (`web.unsubscribe`, `web.webhooks`, `web.preview`); this
module puts them in one app, answers database errors, and configures logging so no token reaches
a log line.
"""

import copy
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from uvicorn.config import LOGGING_CONFIG

from core.delivery.unsubscribe import load_secret
from core.generation.generate import GenerationCache
from core.settings import PROJECT_ROOT, get_settings
from db.engine import DatabaseConfig, sessions_for
from db.queries.health import database_answers
from web.preview import PreviewAccess, preview_routes
from web.redaction import error_name, redact_tokens
from web.unsubscribe import page, unsubscribe_routes
from web.webhooks import WebhookSecrets, webhook_error, webhook_routes

_log = logging.getLogger(__name__)

# The package's loggers (this module's, web.unsubscribe's, web.webhooks') share one config.
_PACKAGE = __name__.partition(".")[0]


def create_app(
    sessions: sessionmaker[Session],
    secret: bytes,
    webhooks: WebhookSecrets | None = None,
    preview: PreviewAccess | None = None,
) -> FastAPI:
    """The ASGI app: unsubscribe pages, engagement webhooks, previews and /healthz.

    Unsubscribe tokens are checked with `secret`; only the webhook providers `webhooks` holds
    secrets for are served (none by default), and previews only with `preview` (404 without).
    """
    # A public endpoint has no use for interactive API docs.
    app = FastAPI(title="campaign-pipeline", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz", response_model=None)
    def healthz() -> dict[str, str] | JSONResponse:
        """200 when the database answers, 503 when it does not."""
        try:
            with sessions() as session:
                database_answers(session)
        except SQLAlchemyError as exc:
            _log.error("health check: database unavailable (%s)", error_name(exc))
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok"}

    app.include_router(unsubscribe_routes(sessions, secret))
    app.include_router(webhook_routes(sessions, webhooks or WebhookSecrets()))
    app.include_router(preview_routes(sessions, preview))

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> Response:
        _log.error(
            "%s %s: database error (%s)",
            request.method,
            redact_tokens(request.url.path),
            error_name(exc),
        )
        if request.url.path.startswith(("/webhooks/", "/campaigns/")):
            # A 5xx makes a provider retry later, which is what an unstored event needs; an API
            # caller gets JSON, not the unsubscribe page.
            return webhook_error(503, "database unavailable")
        return page(
            503,
            "Please try again in a few minutes",
            "We could not process this link just now. Nothing was changed.",
        )

    return app


class RedactTokens(logging.Filter):
    """Replaces unsubscribe tokens in log lines (uvicorn's access log above all) with ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message and its string arguments; never drop the record."""
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with tokens redacted everywhere, and this package's INFO shown."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": RedactTokens}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
    config["loggers"][_PACKAGE] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def make_app_from_settings(
    generation_cache: Callable[[], GenerationCache] | None = None,
) -> FastAPI:
    """The app on the configured database and secrets (also usable as a uvicorn `--factory`).

    Previews share `generation_cache` (one per preview) when given; `campaign-pipeline web`
    gives the flows' result storage, and without it previews cache nothing.
    Raises ValueError for a bad DATABASE_URL, UNSUBSCRIBE_SECRET, PIPELINE_API_TOKEN or webhook
    setting, OSError when the secret file cannot be kept, and DatabaseNotReadyError or
    OperationalError for the database.
    """
    settings = get_settings()
    configured = settings.unsubscribe_secret
    secret = load_secret(
        configured.get_secret_value() if configured is not None else None,
        PROJECT_ROOT / ".data",
    )
    webhooks = WebhookSecrets.from_settings(settings)
    preview = PreviewAccess.from_settings(settings, generation_cache)
    return create_app(
        sessions_for(DatabaseConfig.from_settings(settings)), secret, webhooks, preview
    )
