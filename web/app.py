"""The unsubscribe endpoint, the engagement webhooks, and a health check.

A GET never changes anything: mail scanners and link previews fetch every link in a message, so
only a POST unsubscribes, whether a mailbox provider's one-click or the page's button. The token
in the URL is the only credential, so it never reaches a log line and the pages never echo the
address it stands for.

`POST /webhooks/{provider}` takes SendGrid, Mailgun and Postmark event webhooks: it checks the
provider's signature or credentials, stores the payload as one EngagementInbox row and answers
200 only once that row is committed, so a provider retries anything not stored. A flow drains the
inbox later; nothing here interprets the events.
"""

import copy
import html
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from uvicorn.config import LOGGING_CONFIG

from core.delivery.unsubscribe import load_secret, verify_token
from core.engagement.webhook_auth import (
    WebhookRejected,
    load_sendgrid_public_key,
    sendgrid_replay_key,
    verify_mailgun,
    verify_postmark,
    verify_sendgrid,
)
from core.settings import PROJECT_ROOT, Settings, get_settings
from core.statuses import CampaignLeadStatus, EngagementType
from db.base import utcnow
from db.engine import (
    check_revision,
    make_engine,
    make_session_factory,
    resolve_database_url,
    unit_of_work,
)
from db.models import Campaign, EmailSend, EngagementInbox
from db.queries.stops import record_event, stop_address

_log = logging.getLogger(__name__)

# A one-click body is 26 bytes and the form's is empty: a body this large is no unsubscribe.
MAX_BODY_BYTES = 64 * 1024
ONE_CLICK_FIELD = ("List-Unsubscribe", "One-Click")
UNSUBSCRIBE_REASON = "unsubscribed"
_TOKEN_IN_PATH = re.compile(r"(/unsubscribe/)[^/?#\s\"]+")

# SendGrid posts up to a few thousand events per request; 5 MiB holds any real batch.
MAX_WEBHOOK_BODY_BYTES = 5 * 1024 * 1024
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

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


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or None when it declares or grows past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


@dataclass(frozen=True)
class WebhookSecrets:
    """What each webhook provider is checked with; a provider left unset is answered 404.

    Raises ValueError for a SendGrid key that is not a P-256 public key, an empty secret, or
    only one half of Postmark's credentials.
    """

    sendgrid_public_key: str | None = None
    mailgun_signing_key: SecretStr | None = None
    postmark_username: str | None = None
    postmark_password: SecretStr | None = None

    def __post_init__(self) -> None:
        """Refuse a configuration that would accept forged or no requests, before serving."""
        if self.sendgrid_public_key is not None:
            load_sendgrid_public_key(self.sendgrid_public_key)
        if self.mailgun_signing_key is not None and not self.mailgun_signing_key.get_secret_value():
            raise ValueError("MAILGUN_WEBHOOK_SIGNING_KEY is empty")
        if (self.postmark_username is None) != (self.postmark_password is None):
            raise ValueError(
                "set both POSTMARK_WEBHOOK_USERNAME and POSTMARK_WEBHOOK_PASSWORD, or neither"
            )
        if self.postmark_password is not None and not self.postmark_password.get_secret_value():
            raise ValueError("POSTMARK_WEBHOOK_PASSWORD is empty")

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookSecrets":
        """The webhook settings; a variable set to an empty string counts as unset."""
        return cls(
            sendgrid_public_key=settings.sendgrid_webhook_public_key or None,
            mailgun_signing_key=_unless_empty(settings.mailgun_webhook_signing_key),
            postmark_username=settings.postmark_webhook_username or None,
            postmark_password=_unless_empty(settings.postmark_webhook_password),
        )

    def configured(self) -> frozenset[str]:
        """The providers whose webhooks are served."""
        return frozenset(
            provider
            for provider, secret in (
                ("sendgrid", self.sendgrid_public_key),
                ("mailgun", self.mailgun_signing_key),
                ("postmark", self.postmark_password),
            )
            if secret is not None
        )


def _unless_empty(value: SecretStr | None) -> SecretStr | None:
    return value if value is not None and value.get_secret_value() else None


class BadPayloadError(ValueError):
    """A body that is not the JSON its provider sends; the message is safe to answer with."""


class Accepted(NamedTuple):
    """A webhook request that passed its provider's check, ready for the inbox."""

    payload: Any
    events: int
    replay_key: str | None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and PostgreSQL's jsonb refuses them.
    raise ValueError(f"{name} is not JSON")


def parse_payload(provider: str, body: bytes) -> tuple[Any, int]:
    """The body as JSON and its number of events; BadPayloadError for another shape.

    SendGrid posts an array of events, Postmark one event object, Mailgun one object with its
    `signature` and `event-data`.
    """
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise BadPayloadError("body is not JSON") from None
    if provider == "sendgrid":
        if not isinstance(payload, list):
            raise BadPayloadError("expected a JSON array of events")
        return payload, len(payload)
    if not isinstance(payload, dict):
        raise BadPayloadError("expected a JSON object")
    if provider == "mailgun" and not isinstance(payload.get("event-data"), dict):
        raise BadPayloadError("expected an event-data object")
    return payload, 1


def _secret(value: SecretStr | str | None) -> str:
    # Only configured providers are served; an empty key here would accept forgeries.
    if value is None:
        raise WebhookRejected("webhook not configured")
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def accept_webhook(
    webhooks: WebhookSecrets,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
) -> Accepted:
    """Check one request with its provider's secret, then parse it.

    Raises WebhookRejected for a bad signature, credentials or timestamp and BadPayloadError for
    a body that is not the provider's JSON. Mailgun's signature lives in the JSON, so only there
    is the body parsed before it is checked.
    """
    replay_key = None
    if provider == "postmark":
        verify_postmark(
            _secret(webhooks.postmark_username),
            _secret(webhooks.postmark_password),
            headers.get("authorization"),
        )
    elif provider == "sendgrid":
        signature = headers.get(SENDGRID_SIGNATURE_HEADER, "")
        verify_sendgrid(
            _secret(webhooks.sendgrid_public_key),
            signature,
            headers.get(SENDGRID_TIMESTAMP_HEADER, ""),
            body,
            now=now,
        )
        # A copy of this request is refused as a replay, however its signature is spelt.
        replay_key = sendgrid_replay_key(signature)
    payload, events = parse_payload(provider, body)
    if provider == "mailgun":
        replay_key = verify_mailgun(_secret(webhooks.mailgun_signing_key), payload, now=now)
    return Accepted(payload, events, replay_key)


def store_webhook(
    sessions: sessionmaker[Session], provider: str, payload: Any, replay_key: str | None
) -> str | None:
    """Insert one inbox row and commit; its id, or None when (provider, replay key) was seen.

    The unique index decides, so two copies of one request racing each other store one row.
    """
    with unit_of_work(sessions) as session:
        return session.scalar(
            insert(EngagementInbox)
            .values(provider=provider, payload=payload, replayKey=replay_key)
            .on_conflict_do_nothing(index_elements=["provider", "replayKey"])
            .returning(EngagementInbox.id)
        )


_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="webhooks"'}


def _webhook_error(
    status_code: int, error: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def create_app(
    sessions: sessionmaker[Session],
    secret: bytes,
    webhooks: WebhookSecrets | None = None,
) -> FastAPI:
    """The ASGI app: unsubscribe pages, engagement webhooks and /healthz.

    Unsubscribe tokens are checked with `secret`; only the webhook providers `webhooks` holds
    secrets for are served (none by default).
    """
    webhooks = webhooks or WebhookSecrets()
    served = webhooks.configured()
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

    @app.post("/webhooks/{provider}")
    async def webhook(provider: str, request: Request) -> JSONResponse:
        """A provider's events: checked, stored as one inbox row, and only then answered 200."""
        if provider not in served:
            return _webhook_error(404, "webhook not configured")
        body = await _read_body(request, MAX_WEBHOOK_BODY_BYTES)
        if body is None:
            _log.info("webhook %s refused: body over %d bytes", provider, MAX_WEBHOOK_BODY_BYTES)
            return _webhook_error(413, "request too large")
        try:
            # Off the event loop: parsing a few MiB of JSON would stall every other request.
            accepted = await run_in_threadpool(
                accept_webhook, webhooks, provider, request.headers, body, now=time.time()
            )
        except WebhookRejected as exc:
            _log.info("webhook %s refused: %s", provider, exc.reason)
            if provider == "postmark":
                return _webhook_error(401, exc.reason, _BASIC_CHALLENGE)
            return _webhook_error(403, exc.reason)
        except BadPayloadError as exc:
            _log.info("webhook %s refused: %s", provider, exc)
            return _webhook_error(400, str(exc))
        try:
            inbox_id = await run_in_threadpool(
                store_webhook, sessions, provider, accepted.payload, accepted.replay_key
            )
        except DataError as exc:
            # Valid JSON that jsonb cannot hold (a \u0000, a lone surrogate): a retry cannot help.
            _log.info("webhook %s refused: payload not storable (%s)", provider, _error_name(exc))
            return _webhook_error(400, "payload cannot be stored")
        if inbox_id is None:
            _log.info("webhook %s refused: replay of a request already stored", provider)
            return _webhook_error(409, "replay")
        _log.info(
            "webhook %s: stored inbox row %s with %d events", provider, inbox_id, accepted.events
        )
        return JSONResponse({"stored": inbox_id})

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> Response:
        _log.error("%s %s: database error (%s)", request.method, _path(request), _error_name(exc))
        if request.url.path.startswith("/webhooks/"):
            # A 5xx makes the provider retry later, which is what an unstored event needs.
            return _webhook_error(503, "database unavailable")
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
    """The app on the configured database and secrets (also usable as a uvicorn `--factory`).

    Raises ValueError for a bad DATABASE_URL, UNSUBSCRIBE_SECRET or webhook setting, OSError when
    the secret file cannot be kept, and DatabaseNotReadyError or OperationalError for the
    database.
    """
    settings = get_settings()
    configured = settings.unsubscribe_secret
    secret = load_secret(
        configured.get_secret_value() if configured is not None else None,
        PROJECT_ROOT / ".data",
    )
    webhooks = WebhookSecrets.from_settings(settings)
    engine = make_engine(resolve_database_url(settings))
    check_revision(engine)
    return create_app(make_session_factory(engine), secret, webhooks)
