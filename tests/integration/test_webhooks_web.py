"""The engagement webhooks over real HTTP: uvicorn in a thread, httpx, a real PostgreSQL.

Each provider's documented example payload is signed the way the provider signs it, posted, and
must land in EngagementInbox exactly once and unchanged; anything forged, stale, replayed or
oversized must be refused with nothing stored.
"""

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.engine import make_engine, make_session_factory
from db.models import EngagementInbox
from web.app import create_app
from web.webhooks import MAX_WEBHOOK_BODY_BYTES, WebhookSecrets

SECRET = b"a test secret of more than sixteen bytes"
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "correct horse battery staple"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SENDGRID_PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC_KEY = base64.b64encode(
    SENDGRID_PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
ALL_CONFIGURED = WebhookSecrets(
    sendgrid_public_key=SENDGRID_PUBLIC_KEY,
    mailgun_signing_key=SecretStr(MAILGUN_KEY),
    postmark_username=POSTMARK_USER,
    postmark_password=SecretStr(POSTMARK_PASSWORD),
)
JSON = {"Content-Type": "application/json"}
ADDRESSES = ("example@test.com", "alice@example.com", "john@example.com")

# SendGrid's Event Webhook example: one request carries a batch of events.
_SG_COMMON = {
    "email": "example@test.com",
    "timestamp": 1513299569,
    "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "category": "cat facts",
    "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000",
}
SENDGRID_EVENTS = [
    {**_SG_COMMON, "event": "processed", "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A=="},
    {
        **_SG_COMMON,
        "event": "deferred",
        "sg_event_id": "rbtnWrG1DVDGGGFHFyun0B==",
        "response": "400 try again later",
        "attempt": "5",
    },
    {
        **_SG_COMMON,
        "event": "delivered",
        "sg_event_id": "rWVYmVk90MjZJ9iohOBa3w==",
        "response": "250 OK",
    },
    {
        **_SG_COMMON,
        "event": "open",
        "sg_event_id": "FOTFFO0ecsBE-zxFXfs6WA==",
        "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
        "ip": "255.255.255.255",
    },
    {
        **_SG_COMMON,
        "event": "click",
        "sg_event_id": "kCAi1KttyQdEKHhdC-nuEA==",
        "url": "http://www.sendgrid.com/",
    },
    {
        **_SG_COMMON,
        "event": "bounce",
        "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
        "reason": "500 unknown recipient",
        "status": "5.0.0",
        "type": "bounce",
    },
]

# Postmark's Bounce webhook example.
POSTMARK_BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Test",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {"a_key": "a_value", "b_key": "b_value"},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox "
    "not found).",
    "Details": "Test bounce details",
    "Email": "john@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Test subject",
    "Content": "<Full dump of bounce>",
}

# Mailgun's "delivered" webhook example; the signature block is added per request.
MAILGUN_EVENT = {
    "tags": ["my_tag_1", "my_tag_2"],
    "timestamp": 1521472262.908181,
    "storage": {
        "url": "https://se.api.mailgun.net/v3/domains/sandbox.mailgun.org/messages/message_key",
        "key": "message_key",
    },
    "envelope": {
        "transport": "smtp",
        "sender": "bob@sandbox.mailgun.org",
        "sending-ip": "209.61.154.250",
        "targets": "alice@example.com",
    },
    "recipient-domain": "example.com",
    "id": "CPgfbmQMTCKtHW6uIWtuVe",
    "campaigns": [],
    "user-variables": {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome"},
    "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False},
    "log-level": "info",
    "message": {
        "headers": {
            "to": "Alice <alice@example.com>",
            "message-id": "20130503182626.18666.16540@sandbox.mailgun.org",
            "from": "Bob <bob@sandbox.mailgun.org>",
            "subject": "Test delivered webhook",
        },
        "attachments": [],
        "size": 111,
    },
    "recipient": "alice@example.com",
    "event": "delivered",
    "delivery-status": {
        "tls": True,
        "mx-host": "smtp-in.example.com",
        "code": 250,
        "description": "",
        "session-seconds": 0.4331989288330078,
        "utf8": True,
        "attempt-no": 1,
        "message": "OK",
        "certificate-verified": True,
    },
}


def sendgrid_headers(body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The Signed Event Webhook headers SendGrid sends with `body`."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SENDGRID_PRIVATE_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        **JSON,
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def mailgun_payload(
    token: str, *, event: dict | None = None, key: str = MAILGUN_KEY, timestamp: int | None = None
) -> dict:
    """A Mailgun webhook body: the event and the HMAC of timestamp + token."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": MAILGUN_EVENT if event is None else event,
    }


def postmark_headers(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {**JSON, "Authorization": f"Basic {credentials}"}


def signed_request(provider: str) -> tuple[bytes, dict[str, str], object]:
    """A valid request for `provider`: its body, its headers and the JSON it carries."""
    if provider == "sendgrid":
        body = json.dumps(SENDGRID_EVENTS).encode()
        return body, sendgrid_headers(body), SENDGRID_EVENTS
    if provider == "mailgun":
        payload = mailgun_payload("a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0")
        return json.dumps(payload).encode(), JSON, payload
    return json.dumps(POSTMARK_BOUNCE).encode(), postmark_headers(), POSTMARK_BOUNCE


def inbox(sessions: sessionmaker[Session]) -> list[EngagementInbox]:
    with sessions() as session:
        return list(session.scalars(select(EngagementInbox).order_by(EngagementInbox.receivedAt)))


@pytest.fixture
def client(serve, sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    with serve(create_app(sessions, SECRET, ALL_CONFIGURED)) as client:
        yield client


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "postmark"])
def test_a_valid_webhook_is_stored_once_and_unchanged(client, sessions, caplog, provider):
    body, headers, posted = signed_request(provider)
    with caplog.at_level(logging.INFO):
        response = client.post(f"/webhooks/{provider}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    stored_id = response.json()["stored"]

    (row,) = inbox(sessions)
    assert row.id == stored_id
    assert row.provider == provider
    assert row.payload == posted
    assert row.processedAt is None and row.error is None
    expected_key = {
        "sendgrid": None,  # checked below: the signature, in its low-s form
        "mailgun": "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",
        "postmark": None,
    }[provider]
    if provider == "sendgrid":
        signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
        r, s = decode_dss_signature(base64.b64decode(signature))
        expected_key = base64.b64encode(encode_dss_signature(r, min(s, P256_ORDER - s))).decode()
    assert row.replayKey == expected_key

    log = server_log(caplog)
    events = len(SENDGRID_EVENTS) if provider == "sendgrid" else 1
    assert f"webhook {provider}: stored inbox row {stored_id} with {events} events" in log
    secrets = [*ADDRESSES, MAILGUN_KEY, POSTMARK_PASSWORD]
    secrets += [
        headers[name]
        for name in ("Authorization", "X-Twilio-Email-Event-Webhook-Signature")
        if name in headers
    ]
    if provider == "mailgun":
        secrets.append(posted["signature"]["token"])
    for secret in secrets:
        assert secret not in log


def _bad_requests() -> dict[str, tuple[str, bytes, dict[str, str], int]]:
    """Forged or stale requests: (provider, body, headers, expected status)."""
    sg_body = json.dumps(SENDGRID_EVENTS).encode()
    sg_headers = sendgrid_headers(sg_body)
    intruder = ec.generate_private_key(ec.SECP256R1())
    stamp = str(int(time.time()))
    forged = intruder.sign(stamp.encode() + sg_body, ec.ECDSA(hashes.SHA256()))
    token = "b7de0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de1"
    tampered_mailgun = mailgun_payload(token)
    tampered_mailgun["event-data"] = {**MAILGUN_EVENT, "event": "failed"}
    tampered_mailgun["signature"]["token"] = token[::-1]
    pm_body = json.dumps(POSTMARK_BOUNCE).encode()
    return {
        "sendgrid tampered body": (
            "sendgrid",
            sg_body.replace(b'"bounce"', b'"delivered"'),
            sg_headers,
            403,
        ),
        "sendgrid another key": (
            "sendgrid",
            sg_body,
            {
                **sg_headers,
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(forged).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            },
            403,
        ),
        "sendgrid no headers": ("sendgrid", sg_body, JSON, 403),
        "sendgrid expired": (
            "sendgrid",
            sg_body,
            sendgrid_headers(sg_body, timestamp=int(time.time()) - 3600),
            403,
        ),
        "mailgun another key": (
            "mailgun",
            json.dumps(mailgun_payload(token, key="not the signing key")).encode(),
            JSON,
            403,
        ),
        "mailgun tampered token": ("mailgun", json.dumps(tampered_mailgun).encode(), JSON, 403),
        "mailgun unsigned": (
            "mailgun",
            json.dumps({"event-data": MAILGUN_EVENT}).encode(),
            JSON,
            403,
        ),
        "mailgun expired": (
            "mailgun",
            json.dumps(mailgun_payload(token, timestamp=int(time.time()) - 3600)).encode(),
            JSON,
            403,
        ),
        "postmark wrong password": ("postmark", pm_body, postmark_headers(password="guess"), 401),
        "postmark no credentials": ("postmark", pm_body, JSON, 401),
    }


def test_forged_or_stale_webhooks_are_refused_and_store_nothing(client, sessions, caplog):
    with caplog.at_level(logging.INFO):
        for name, (provider, body, headers, status) in _bad_requests().items():
            response = client.post(f"/webhooks/{provider}", content=body, headers=headers)
            assert response.status_code == status, (name, response.text)
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Basic"), name
    assert inbox(sessions) == []
    log = server_log(caplog)
    assert "webhook sendgrid refused: bad signature" in log
    assert "webhook mailgun refused: timestamp outside the allowed window" in log
    assert "webhook postmark refused: bad credentials" in log
    assert "guess" not in log and "@example.com" not in log


def test_a_replayed_mailgun_token_is_refused(client, sessions):
    token = "c9de0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de2"
    body = json.dumps(mailgun_payload(token)).encode()
    assert client.post("/webhooks/mailgun", content=body, headers=JSON).status_code == 200

    again = client.post("/webhooks/mailgun", content=body, headers=JSON)
    assert again.status_code == 409
    # The same token under another event, correctly signed again: still the same one-time token.
    other = mailgun_payload(token, event={**MAILGUN_EVENT, "event": "opened"})
    reused = client.post("/webhooks/mailgun", content=json.dumps(other).encode(), headers=JSON)
    assert reused.status_code == 409
    assert len(inbox(sessions)) == 1


def test_a_replayed_sendgrid_request_is_refused_however_its_signature_is_spelt(client, sessions):
    body = json.dumps(SENDGRID_EVENTS).encode()
    headers = sendgrid_headers(body)
    assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200

    assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 409
    # (r, n - s) is a second valid signature of the same request: a replay all the same.
    r, s = decode_dss_signature(base64.b64decode(headers["X-Twilio-Email-Event-Webhook-Signature"]))
    twin = base64.b64encode(encode_dss_signature(r, P256_ORDER - s)).decode()
    malleated = {**headers, "X-Twilio-Email-Event-Webhook-Signature": twin}
    assert client.post("/webhooks/sendgrid", content=body, headers=malleated).status_code == 409
    assert len(inbox(sessions)) == 1

    # A new delivery of the same events (SendGrid's retry) is signed afresh and stored.
    fresh = sendgrid_headers(body)
    assert client.post("/webhooks/sendgrid", content=body, headers=fresh).status_code == 200
    assert len(inbox(sessions)) == 2


def test_two_copies_racing_store_one_row(client, sessions):
    body = json.dumps(
        mailgun_payload("d0de0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de3")
    ).encode()
    statuses: list[int] = []
    start = threading.Barrier(8)

    def post() -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as own:
            start.wait()
            statuses.append(own.post("/webhooks/mailgun", content=body, headers=JSON).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 7
    assert len(inbox(sessions)) == 1


def test_postmark_stores_every_post_since_it_has_no_replay_token(client, sessions):
    body, headers, _ = signed_request("postmark")
    for _ in range(2):
        assert client.post("/webhooks/postmark", content=body, headers=headers).status_code == 200
    assert [row.replayKey for row in inbox(sessions)] == [None, None]


def test_unconfigured_or_unknown_providers_are_404(serve, sessions):
    only_sendgrid = WebhookSecrets(sendgrid_public_key=SENDGRID_PUBLIC_KEY)
    with serve(create_app(sessions, SECRET, only_sendgrid)) as client:
        for provider in ("mailgun", "postmark", "ses"):
            body, headers, _ = signed_request(provider if provider != "ses" else "postmark")
            response = client.post(f"/webhooks/{provider}", content=body, headers=headers)
            assert response.status_code == 404, provider
            assert response.json() == {"error": "webhook not configured"}
    with serve(create_app(sessions, SECRET)) as client:
        body, headers, _ = signed_request("sendgrid")
        assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 404
    assert inbox(sessions) == []


def headers_for(provider: str, body: bytes) -> dict[str, str]:
    """Headers that pass the provider's check (Mailgun's signature lives in the body)."""
    if provider == "sendgrid":
        return sendgrid_headers(body)
    return postmark_headers() if provider == "postmark" else JSON


def test_an_oversized_body_is_413_and_stores_nothing(client, sessions):
    # Valid JSON, just too much of it: only the size is wrong.
    body = json.dumps([{"pad": "x" * MAX_WEBHOOK_BODY_BYTES}]).encode()
    for provider in ("sendgrid", "mailgun", "postmark"):
        response = client.post(
            f"/webhooks/{provider}", content=body, headers=headers_for(provider, body)
        )
        assert response.status_code == 413, provider
        assert response.json() == {"error": "request too large"}

    def chunked() -> Iterator[bytes]:  # a generator is sent chunked, with no Content-Length
        for _ in range(6):
            yield b" " * (1024 * 1024)

    response = client.post("/webhooks/postmark", content=chunked(), headers=postmark_headers())
    assert response.status_code == 413
    assert inbox(sessions) == []


NOT_THE_PROVIDERS_JSON = {
    "sendgrid: not JSON": ("sendgrid", b"not json"),
    "sendgrid: an object, not the array": ("sendgrid", json.dumps(SENDGRID_EVENTS[0]).encode()),
    "postmark: cut short": ("postmark", b'{"RecordType": '),
    "postmark: an array": ("postmark", b"[1, 2]"),
    "postmark: NaN": ("postmark", b'{"Value": NaN}'),
    "postmark: Latin-1": ("postmark", '{"Email": "ü"}'.encode("latin-1")),
    "postmark: nested too deep": ("postmark", b"[" * 100_000 + b"]" * 100_000),
    "postmark: NUL, which jsonb refuses": ("postmark", b'{"Details": "a \\u0000 here"}'),
    "mailgun: not JSON": ("mailgun", b"not json"),
    "mailgun: no event-data object": (
        "mailgun",
        json.dumps({"signature": {}, "event-data": "opened"}).encode(),
    ),
}


def test_a_body_that_is_not_the_providers_json_is_400_and_stores_nothing(client, sessions):
    for name, (provider, body) in NOT_THE_PROVIDERS_JSON.items():
        response = client.post(
            f"/webhooks/{provider}", content=body, headers=headers_for(provider, body)
        )
        assert response.status_code == 400, (name, response.text)
    assert inbox(sessions) == []


def test_an_unreachable_database_is_a_503_so_the_provider_retries(serve, caplog):
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with (
            caplog.at_level(logging.INFO),
            serve(create_app(make_session_factory(engine), SECRET, ALL_CONFIGURED)) as client,
        ):
            body, headers, _ = signed_request("postmark")
            response = client.post("/webhooks/postmark", content=body, headers=headers)
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"error": "database unavailable"}
    assert "Traceback" not in server_log(caplog)


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({"sendgrid_public_key": "not a key"}, "SENDGRID_WEBHOOK_PUBLIC_KEY"),
        ({"mailgun_signing_key": SecretStr("")}, "MAILGUN_WEBHOOK_SIGNING_KEY is empty"),
        ({"postmark_username": "only-a-user"}, "set both POSTMARK_WEBHOOK_USERNAME"),
        ({"postmark_password": SecretStr("only-a-password")}, "set both"),
    ],
)
def test_a_bad_webhook_configuration_is_refused_before_serving(secrets, message):
    with pytest.raises(ValueError, match=message) as raised:
        WebhookSecrets(**secrets)
    assert "only-a-password" not in str(raised.value)


def test_secrets_come_from_settings_and_blank_means_unset(monkeypatch):
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", SENDGRID_PUBLIC_KEY)
    monkeypatch.setenv("MAILGUN_WEBHOOK_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("POSTMARK_WEBHOOK_USERNAME", POSTMARK_USER)
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)
    assert WebhookSecrets.from_settings(Settings()) == ALL_CONFIGURED
    for name in ("SENDGRID_WEBHOOK_PUBLIC_KEY", "MAILGUN_WEBHOOK_SIGNING_KEY"):
        monkeypatch.setenv(name, "")
    monkeypatch.delenv("POSTMARK_WEBHOOK_USERNAME")
    monkeypatch.setenv("POSTMARK_WEBHOOK_PASSWORD", "")
    assert WebhookSecrets.from_settings(Settings()).configured() == frozenset()
