"""Webhook signatures: each provider's good request passes; bad, expired or tampered ones do not."""

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from core.engagement.webhook_auth import (
    WebhookRejected,
    load_sendgrid_public_key,
    sendgrid_replay_key,
    verify_mailgun,
    verify_postmark,
    verify_sendgrid,
)

NOW = 1_764_000_000.0
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SENDGRID_BODY = json.dumps(
    [
        {
            "email": "example@test.com",
            "timestamp": 1513299569,
            "event": "delivered",
            "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A==",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        }
    ]
).encode()
MAILGUN_KEY = "key-mailgun-test-signing-key"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "a p@ssword: with colon"


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sendgrid_sign(private_key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """What SendGrid puts in X-Twilio-Email-Event-Webhook-Signature."""
    der = private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def public_key(private_key) -> str:
    return public_key_b64(private_key)


def rejected(reason_part: str):
    return pytest.raises(WebhookRejected, match=reason_part)


# SendGrid


def test_sendgrid_accepts_its_signature(private_key, public_key):
    timestamp = str(int(NOW) - 10)
    signature = sendgrid_sign(private_key, timestamp, SENDGRID_BODY)
    verify_sendgrid(public_key, signature, timestamp, SENDGRID_BODY, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        SENDGRID_BODY.replace(b"delivered", b"bounce"),
        SENDGRID_BODY + b" ",
        b"",
    ],
    ids=["changed event", "trailing space", "empty"],
)
def test_sendgrid_refuses_a_tampered_body(private_key, public_key, body):
    timestamp = str(int(NOW))
    signature = sendgrid_sign(private_key, timestamp, SENDGRID_BODY)
    with rejected("bad signature"):
        verify_sendgrid(public_key, signature, timestamp, body, now=NOW)


def test_sendgrid_refuses_a_changed_timestamp(private_key, public_key):
    signature = sendgrid_sign(private_key, str(int(NOW)), SENDGRID_BODY)
    with rejected("bad signature"):
        verify_sendgrid(public_key, signature, str(int(NOW) - 1), SENDGRID_BODY, now=NOW)


def test_sendgrid_refuses_another_key(public_key):
    intruder = ec.generate_private_key(ec.SECP256R1())
    timestamp = str(int(NOW))
    signature = sendgrid_sign(intruder, timestamp, SENDGRID_BODY)
    with rejected("bad signature"):
        verify_sendgrid(public_key, signature, timestamp, SENDGRID_BODY, now=NOW)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_sendgrid_refuses_timestamps_outside_the_window(private_key, public_key, age):
    timestamp = str(int(NOW) - age)
    signature = sendgrid_sign(private_key, timestamp, SENDGRID_BODY)
    with rejected("timestamp outside"):
        verify_sendgrid(public_key, signature, timestamp, SENDGRID_BODY, now=NOW)
    # A wider window, when asked for, accepts the same request.
    verify_sendgrid(public_key, signature, timestamp, SENDGRID_BODY, now=NOW, tolerance=4000)


@pytest.mark.parametrize("timestamp", ["", "abc", "1.5", " 1764000000", "١٧٦٤٠٠٠٠٠٠", "9" * 13])
def test_sendgrid_refuses_malformed_timestamps(private_key, public_key, timestamp):
    signature = sendgrid_sign(private_key, str(int(NOW)), SENDGRID_BODY)
    with rejected("malformed timestamp"):
        verify_sendgrid(public_key, signature, timestamp, SENDGRID_BODY, now=NOW)


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", "MEUCIQ\u00e9==", "A" * 200, base64.b64encode(b"not DER at all").decode()],
    ids=["empty", "not base64", "not ASCII", "overlong", "not DER"],
)
def test_sendgrid_refuses_malformed_signatures(public_key, signature):
    with pytest.raises(WebhookRejected):
        verify_sendgrid(public_key, signature, str(int(NOW)), SENDGRID_BODY, now=NOW)


def test_a_malleated_sendgrid_signature_has_the_same_replay_key(private_key, public_key):
    timestamp = str(int(NOW))
    signature = sendgrid_sign(private_key, timestamp, SENDGRID_BODY)
    r, s = decode_dss_signature(base64.b64decode(signature))
    twin = base64.b64encode(encode_dss_signature(r, P256_ORDER - s)).decode()
    # (r, n - s) verifies too: a replay keyed on the raw header would slip through with it.
    verify_sendgrid(public_key, twin, timestamp, SENDGRID_BODY, now=NOW)
    assert twin != signature
    assert sendgrid_replay_key(twin) == sendgrid_replay_key(signature)
    low_s = signature if s <= P256_ORDER - s else twin
    assert sendgrid_replay_key(signature) == low_s


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not base64!",
        base64.b64encode(b"not DER").decode(),
        public_key_b64(ec.generate_private_key(ec.SECP384R1())),
    ],
    ids=["empty", "not base64", "not DER", "P-384"],
)
def test_a_bad_sendgrid_key_is_a_configuration_error_not_a_rejection(key):
    with pytest.raises(ValueError, match="SENDGRID_WEBHOOK_PUBLIC_KEY") as raised:
        load_sendgrid_public_key(key)
    assert not isinstance(raised.value, WebhookRejected)


# Mailgun


def mailgun_body(timestamp: str, token: str, key: str = MAILGUN_KEY) -> dict:
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {"event": "opened", "id": "DACSsAdVSeGpLid7TN03WA"},
    }


TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"


def test_mailgun_accepts_its_signature_and_returns_the_token():
    payload = mailgun_body(str(int(NOW) - 5), TOKEN)
    assert verify_mailgun(MAILGUN_KEY, payload, now=NOW) == TOKEN


def test_mailgun_accepts_an_uppercase_hex_signature_and_an_integer_timestamp():
    payload = mailgun_body(str(int(NOW)), TOKEN)
    payload["signature"]["signature"] = payload["signature"]["signature"].upper()
    payload["signature"]["timestamp"] = int(NOW)
    assert verify_mailgun(MAILGUN_KEY, payload, now=NOW) == TOKEN


def test_mailgun_refuses_another_key():
    payload = mailgun_body(str(int(NOW)), TOKEN, key="somebody else's key")
    with rejected("bad signature"):
        verify_mailgun(MAILGUN_KEY, payload, now=NOW)


@pytest.mark.parametrize("field", ["timestamp", "token"])
def test_mailgun_refuses_a_tampered_signature_block(field):
    payload = mailgun_body(str(int(NOW)), TOKEN)
    value = payload["signature"][field]
    payload["signature"][field] = value[:-1] + ("1" if value[-1] != "1" else "2")
    with rejected("bad signature"):
        verify_mailgun(MAILGUN_KEY, payload, now=NOW)


@pytest.mark.parametrize("age", [301, 86_400, -301])
def test_mailgun_refuses_timestamps_outside_the_window(age):
    payload = mailgun_body(str(int(NOW) - age), TOKEN)
    with rejected("timestamp outside"):
        verify_mailgun(MAILGUN_KEY, payload, now=NOW)


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (None, "missing signature"),
        ("a string", "missing signature"),
        ({"timestamp": "1764000000", "token": TOKEN}, "malformed signature"),
        ({"timestamp": True, "token": TOKEN, "signature": "0" * 64}, "malformed timestamp"),
        ({"timestamp": "1764000000", "token": "", "signature": "0" * 64}, "malformed token"),
        ({"timestamp": "1764000000", "token": 5, "signature": "0" * 64}, "malformed token"),
        ({"timestamp": "1764000000", "token": TOKEN, "signature": "zz" * 32}, "malformed"),
    ],
)
def test_mailgun_refuses_malformed_signature_blocks(block, reason):
    with rejected(reason):
        verify_mailgun(MAILGUN_KEY, {"signature": block, "event-data": {}}, now=NOW)


def test_reasons_never_quote_the_secret_or_the_signature():
    payload = mailgun_body(str(int(NOW)), TOKEN, key="wrong")
    with pytest.raises(WebhookRejected) as raised:
        verify_mailgun(MAILGUN_KEY, payload, now=NOW)
    for secret in (MAILGUN_KEY, payload["signature"]["signature"], TOKEN):
        assert secret not in str(raised.value)
    with pytest.raises(WebhookRejected) as raised:
        verify_postmark(POSTMARK_USER, POSTMARK_PASSWORD, basic(POSTMARK_USER, "guess"))
    assert "guess" not in str(raised.value) and POSTMARK_PASSWORD not in str(raised.value)


# Postmark


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_postmark_accepts_its_credentials():
    verify_postmark(POSTMARK_USER, POSTMARK_PASSWORD, basic(POSTMARK_USER, POSTMARK_PASSWORD))
    # The scheme is case-insensitive (RFC 7235).
    header = basic(POSTMARK_USER, POSTMARK_PASSWORD).replace("Basic", "basic")
    verify_postmark(POSTMARK_USER, POSTMARK_PASSWORD, header)


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing credentials"),
        ("", "not basic"),
        ("Bearer abc", "not basic"),
        ("Basic", "malformed credentials"),
        ("Basic !!!", "malformed credentials"),
        ("Basic cG9zdG1hcms6\u00e9", "malformed credentials"),
        ("Basic " + base64.b64encode(b"no colon").decode(), "malformed credentials"),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "malformed credentials"),
        (basic(POSTMARK_USER, "wrong"), "bad credentials"),
        (basic("someone", POSTMARK_PASSWORD), "bad credentials"),
        (basic(POSTMARK_USER, POSTMARK_PASSWORD + "x"), "bad credentials"),
        (basic(POSTMARK_USER, ""), "bad credentials"),
    ],
)
def test_postmark_refuses_bad_credentials(authorization, reason):
    with rejected(reason):
        verify_postmark(POSTMARK_USER, POSTMARK_PASSWORD, authorization)
