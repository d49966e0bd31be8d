"""The unsubscribe pages: a confirmation page on GET, the unsubscribe itself on POST.

A GET never changes anything: mail scanners and link previews fetch every link in a message, so
only a POST unsubscribes, whether a mailbox provider's one-click or the page's button. The token
in the URL is the only credential, so it never reaches a log line and the pages never echo the
address it stands for.
"""

import html
import logging
from email import policy
from email.parser import BytesParser
from enum import StrEnum
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.delivery.unsubscribe import verify_token
from db.base import utcnow
from db.engine import unit_of_work
from db.queries.unsubscribe import send_exists, unsubscribe_recipient
from web.body import read_body

_log = logging.getLogger(__name__)

# A one-click body is 26 bytes and the form's is empty: a body this large is no unsubscribe.
MAX_BODY_BYTES = 64 * 1024
ONE_CLICK_FIELD = ("List-Unsubscribe", "One-Click")


class UnsubscribeSource(StrEnum):
    """How an unsubscribe arrived, kept in its event's metadata."""

    one_click = "one-click"  # RFC 8058, posted by the recipient's mail client
    form = "form"  # the confirmation page's button


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


def unsubscribe(sessions: sessionmaker[Session], send_id: str, source: UnsubscribeSource) -> bool:
    """Unsubscribe the address a send went to, in one transaction; False for an unknown send.

    Suppresses the address in the campaign's workspace, stops every enrolment of its lead there,
    cancels their scheduled sends and records one unsubscribe event for the send. Each step is
    idempotent, so a repeated request changes nothing.
    """
    with unit_of_work(sessions) as session:
        done = unsubscribe_recipient(session, send_id, source=source.value, now=utcnow())
    if done is None:
        return False
    result, recorded = done
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


def request_source(content_type: str, body: bytes) -> UnsubscribeSource:
    """One-click for an RFC 8058 body (urlencoded or multipart), else the form."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("utf-8", "replace"))
    elif media_type == "multipart/form-data":
        fields = _multipart_fields(content_type, body)
    else:
        fields = []
    return UnsubscribeSource.one_click if ONE_CLICK_FIELD in fields else UnsubscribeSource.form


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


def unsubscribe_routes(sessions: sessionmaker[Session], secret: bytes) -> APIRouter:
    """GET and POST /unsubscribe/{token}, tokens checked with `secret`."""
    router = APIRouter()

    @router.get("/unsubscribe/{token}")
    def confirm_page(token: str) -> HTMLResponse:
        """The confirmation page with its button; changes nothing."""
        send_id = verify_token(secret, token)
        if send_id is None:
            _log.info("unsubscribe page: link with a bad signature refused")
            return _not_valid()
        with sessions() as session:
            if not send_exists(session, send_id):
                return _not_found()
        return page(
            200,
            "Unsubscribe",
            "Press the button to stop receiving these emails.",
            form=True,
        )

    @router.post("/unsubscribe/{token}")
    async def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
        """RFC 8058 one-click or the page's button: unsubscribe, idempotently."""
        send_id = verify_token(secret, token)
        if send_id is None:
            _log.info("unsubscribe: link with a bad signature refused")
            return _not_valid()
        body = await read_body(request, MAX_BODY_BYTES)
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

    return router
