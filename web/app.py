"""The unsubscribe endpoint: a confirmation page, RFC 8058 one-click, and a health check.

A GET never changes anything: mail scanners and link previews fetch every link in a message, so
only a POST unsubscribes, whether a mailbox provider's one-click or the page's button. The token
in the URL is the only credential, so it never reaches a log line and the pages never echo the
address it stands for.
"""

import copy
import html
import logging
import re
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from uvicorn.config import LOGGING_CONFIG

from core.settings import PROJECT_ROOT, get_settings
from core.statuses import CampaignLeadStatus, EngagementType
from core.unsubscribe import load_secret, verify_token
from db.base import utcnow
from db.engine import (
    check_revision,
    make_engine,
    make_session_factory,
    resolve_database_url,
    unit_of_work,
)
from db.models import Campaign, EmailSend
from db.queries.stops import record_event, stop_address

_log = logging.getLogger(__name__)

# A one-click body is 26 bytes and the form's is empty: a body this large is no unsubscribe.
MAX_BODY_BYTES = 64 * 1024
ONE_CLICK_FIELD = ("List-Unsubscribe", "One-Click")
UNSUBSCRIBE_REASON = "unsubscribed"
_TOKEN_IN_PATH = re.compile(r"(/unsubscribe/)[^/?#\s\"]+")

_HEADERS = {
    "Cache-Control": "no-store",
    # The token in the URL must not travel to other sites, and the button must not be framed.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Robots-Tag": "noindex",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }}
button {{ font-size: 1rem; padding: .6rem 1.4rem; cursor: pointer; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{message}</p>
{form}</body>
</html>
"""

# No action attribute: the form posts back to the very URL it was served from, token included.
_FORM = '<form method="post"><button type="submit">Unsubscribe</button></form>\n'

_SEND_ADDRESS = select(Campaign.workspaceId, EmailSend.toEmail).join(
    Campaign, Campaign.id == EmailSend.campaignId
)


def page(status_code: int, title: str, message: str, *, form: bool = False) -> HTMLResponse:
    """A small HTML page; title and message are escaped, so no caller can inject markup."""
    body = _PAGE.format(
        title=html.escape(title), message=html.escape(message), form=_FORM if form else ""
    )
    return HTMLResponse(body, status_code=status_code, headers=_HEADERS)


def _not_valid() -> HTMLResponse:
    return page(
        400,
        "This unsubscribe link is not valid",
        "The link may have been cut short or changed. Please use the link from the email itself.",
    )


def _not_found() -> HTMLResponse:
    return page(
        404,
        "This unsubscribe link is no longer known",
        "We could not find the email this link belongs to. Please reply to the email instead.",
    )


def send_exists(sessions: sessionmaker[Session], send_id: str) -> bool:
    """Whether the EmailSend exists; a read only, for the confirmation page."""
    with sessions() as session:
        return session.scalar(select(EmailSend.id).where(EmailSend.id == send_id)) is not None


def unsubscribe(sessions: sessionmaker[Session], send_id: str, source: str) -> bool:
    """Unsubscribe the address a send went to, in one transaction; False for an unknown send.

    Suppresses the address in the campaign's workspace, stops every enrolment of its lead there,
    cancels their scheduled sends and records one unsubscribe event for the send. Each step is
    idempotent, so a repeated request changes nothing.
    """
    now = utcnow()
    with unit_of_work(sessions) as session:
        row = session.execute(_SEND_ADDRESS.where(EmailSend.id == send_id)).first()
        if row is None:
            return False
        workspace_id, email = row
        result = stop_address(
            session,
            workspace_id=workspace_id,
            email=email,
            status=CampaignLeadStatus.unsubscribed,
            reason=UNSUBSCRIBE_REASON,
            now=now,
        )
        recorded = record_event(
            session,
            event_id=f"unsubscribe:{send_id}",
            send_id=send_id,
            type=EngagementType.unsubscribe,
            occurred_at=now,
            metadata={"source": source},
            now=now,
        )
    _log.info(
        "unsubscribe via send %s (%s): suppressed %s, %d enrolments stopped, "
        "%d sends cancelled, event %s",
        send_id,
        source,
        result.suppressed,
        len(result.stopped),
        len(result.cancelled),
        "recorded" if recorded else "already recorded",
    )
    return True


def request_source(content_type: str, body: bytes) -> str:
    """'one-click' for an RFC 8058 body (urlencoded or multipart), else 'form'."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("utf-8", "replace"))
    elif media_type == "multipart/form-data":
        fields = _multipart_fields(content_type, body)
    else:
        fields = []
    return "one-click" if ONE_CLICK_FIELD in fields else "form"


def _multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]]:
    # RFC 8058 asks senders to accept multipart/form-data; the stdlib MIME parser reads it
    # without adding a dependency, and an unparsable body simply has no fields.
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return []
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields.append((name, payload.decode("utf-8", "replace").strip()))
    return fields


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None once it grows past MAX_BODY_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def create_app(sessions: sessionmaker[Session], secret: bytes) -> FastAPI:
    """The ASGI app: unsubscribe pages for tokens signed with `secret`, and /healthz."""
    # A public endpoint has no use for interactive API docs.
    app = FastAPI(title="campaign-pipeline", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz", response_model=None)
    def healthz() -> dict[str, str] | JSONResponse:
        """200 when the database answers, 503 when it does not."""
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            _log.error("health check: database unavailable (%s)", _error_name(exc))
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok"}

    @app.get("/unsubscribe/{token}")
    def confirm_page(token: str) -> HTMLResponse:
        """The confirmation page with its button; changes nothing."""
        send_id = verify_token(secret, token)
        if send_id is None:
            _log.info("unsubscribe page: link with a bad signature refused")
            return _not_valid()
        if not send_exists(sessions, send_id):
            return _not_found()
        return page(
            200,
            "Unsubscribe",
            "Press the button to stop receiving these emails.",
            form=True,
        )

    @app.post("/unsubscribe/{token}")
    async def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
        """RFC 8058 one-click or the page's button: unsubscribe, idempotently."""
        send_id = verify_token(secret, token)
        if send_id is None:
            _log.info("unsubscribe: link with a bad signature refused")
            return _not_valid()
        body = await _read_body(request)
        if body is None:
            return page(413, "Request too large", "An unsubscribe request is only a few bytes.")
        source = request_source(request.headers.get("content-type", ""), body)
        if not await run_in_threadpool(unsubscribe, sessions, send_id, source):
            return _not_found()
        return page(
            200,
            "You are unsubscribed",
            "You will not receive any more emails from this sender.",
        )

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> HTMLResponse:
        _log.error("%s %s: database error (%s)", request.method, _path(request), _error_name(exc))
        return page(
            503,
            "Please try again in a few minutes",
            "We could not process this link just now. Nothing was changed.",
        )

    return app


def _error_name(exc: SQLAlchemyError) -> str:
    # The class and SQLSTATE only: a driver's message can quote a row, and with it an address.
    if isinstance(exc, DBAPIError):
        orig = type(exc.orig)
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return f"{orig.__module__}.{orig.__qualname__}" + (
            f", SQLSTATE {sqlstate}" if sqlstate else ""
        )
    return type(exc).__name__


def _path(request: Request) -> str:
    return _TOKEN_IN_PATH.sub(r"\1***", request.url.path)


class RedactTokens(logging.Filter):
    """Replaces unsubscribe tokens in log lines (uvicorn's access log above all) with ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message and its string arguments; never drop the record."""
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_PATH.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with tokens redacted everywhere, and this module's INFO shown."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": RedactTokens}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
    config["loggers"][__name__] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def make_app_from_settings() -> FastAPI:
    """The app on the configured database and secret (also usable as a uvicorn `--factory`).

    Raises ValueError for a bad DATABASE_URL or UNSUBSCRIBE_SECRET, OSError when the secret file
    cannot be kept, and DatabaseNotReadyError or OperationalError for the database.
    """
    settings = get_settings()
    configured = settings.unsubscribe_secret
    secret = load_secret(
        configured.get_secret_value() if configured is not None else None,
        PROJECT_ROOT / ".data",
    )
    engine = make_engine(resolve_database_url(settings))
    check_revision(engine)
    return create_app(make_session_factory(engine), secret)
