"""`POST /webhooks/{provider}`: SendGrid, Mailgun and Postmark event webhooks.

Each request's signature or credentials are checked with its provider's secret, its payload is
stored as one EngagementInbox row, and it is answered 200 only once that row is committed, so a
provider retries anything not stored. A flow drains the inbox later; nothing here interprets
the events.
"""

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.engagement.webhook_auth import (
    WebhookRejected,
    load_sendgrid_public_key,
    sendgrid_replay_key,
    verify_mailgun,
    verify_postmark,
    verify_sendgrid,
)
from core.settings import Settings
from db.engine import unit_of_work
from db.queries.engagement import store_inbox_payload
from web.body import read_body
from web.redaction import error_name

_log = logging.getLogger(__name__)

# SendGrid posts up to a few thousand events per request; 5 MiB holds any real batch.
MAX_WEBHOOK_BODY_BYTES = 5 * 1024 * 1024
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="webhooks"'}


class WebhookProvider(StrEnum):
    """A provider whose event webhooks are served; the value is the path segment."""

    sendgrid = "sendgrid"
    mailgun = "mailgun"
    postmark = "postmark"


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

    def configured(self) -> frozenset[WebhookProvider]:
        """The providers whose webhooks are served."""
        return frozenset(
            provider
            for provider, secret in (
                (WebhookProvider.sendgrid, self.sendgrid_public_key),
                (WebhookProvider.mailgun, self.mailgun_signing_key),
                (WebhookProvider.postmark, self.postmark_password),
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


def parse_payload(provider: WebhookProvider, body: bytes) -> tuple[Any, int]:
    """The body as JSON and its number of events; BadPayloadError for another shape.

    SendGrid posts an array of events, Postmark one event object, Mailgun one object with its
    `signature` and `event-data`.
    """
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise BadPayloadError("body is not JSON") from None
    if provider is WebhookProvider.sendgrid:
        if not isinstance(payload, list):
            raise BadPayloadError("expected a JSON array of events")
        return payload, len(payload)
    if not isinstance(payload, dict):
        raise BadPayloadError("expected a JSON object")
    if provider is WebhookProvider.mailgun and not isinstance(payload.get("event-data"), dict):
        raise BadPayloadError("expected an event-data object")
    return payload, 1


def _secret(value: SecretStr | str | None) -> str:
    # Only configured providers are served; an empty key here would accept forgeries.
    if value is None:
        raise WebhookRejected("webhook not configured")
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def accept_webhook(
    webhooks: WebhookSecrets,
    provider: WebhookProvider,
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
    if provider is WebhookProvider.postmark:
        verify_postmark(
            _secret(webhooks.postmark_username),
            _secret(webhooks.postmark_password),
            headers.get("authorization"),
        )
    elif provider is WebhookProvider.sendgrid:
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
    if provider is WebhookProvider.mailgun:
        replay_key = verify_mailgun(_secret(webhooks.mailgun_signing_key), payload, now=now)
    return Accepted(payload, events, replay_key)


def store_webhook(
    sessions: sessionmaker[Session],
    provider: WebhookProvider,
    payload: Any,
    replay_key: str | None,
) -> str | None:
    """Store one payload as an inbox row and commit; its id, or None for a replay."""
    with unit_of_work(sessions) as session:
        return store_inbox_payload(session, provider.value, payload, replay_key)


def webhook_error(
    status_code: int, error: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON answer to a request that stored nothing."""
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def webhook_routes(sessions: sessionmaker[Session], webhooks: WebhookSecrets) -> APIRouter:
    """POST /webhooks/{provider} for the providers `webhooks` holds secrets for."""
    router = APIRouter()
    served = webhooks.configured()

    @router.post("/webhooks/{provider}")
    async def webhook(provider: str, request: Request) -> JSONResponse:
        """A provider's events: checked, stored as one inbox row, and only then answered 200."""
        if provider not in served:
            return webhook_error(404, "webhook not configured")
        known = WebhookProvider(provider)
        body = await read_body(request, MAX_WEBHOOK_BODY_BYTES)
        if body is None:
            _log.info("webhook %s refused: body over %d bytes", provider, MAX_WEBHOOK_BODY_BYTES)
            return webhook_error(413, "request too large")
        try:
            # Off the event loop: parsing a few MiB of JSON would stall every other request.
            accepted = await run_in_threadpool(
                accept_webhook, webhooks, known, request.headers, body, now=time.time()
            )
        except WebhookRejected as exc:
            _log.info("webhook %s refused: %s", provider, exc.reason)
            if known is WebhookProvider.postmark:
                return webhook_error(401, exc.reason, _BASIC_CHALLENGE)
            return webhook_error(403, exc.reason)
        except BadPayloadError as exc:
            _log.info("webhook %s refused: %s", provider, exc)
            return webhook_error(400, str(exc))
        try:
            inbox_id = await run_in_threadpool(
                store_webhook, sessions, known, accepted.payload, accepted.replay_key
            )
        except DataError as exc:
            # Valid JSON that jsonb cannot hold (a \u0000, a lone surrogate): a retry cannot help.
            _log.info("webhook %s refused: payload not storable (%s)", provider, error_name(exc))
            return webhook_error(400, "payload cannot be stored")
        if inbox_id is None:
            _log.info("webhook %s refused: replay of a request already stored", provider)
            return webhook_error(409, "replay")
        _log.info(
            "webhook %s: stored inbox row %s with %d events", provider, inbox_id, accepted.events
        )
        return JSONResponse({"stored": inbox_id})

    return router
