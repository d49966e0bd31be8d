"""Who may post engagement webhooks: each provider's signature or credentials, checked purely.

SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 (its Signed Event Webhook),
Mailgun puts an HMAC-SHA256 of `timestamp + token` in the JSON body, and Postmark sends HTTP
Basic credentials. Every check raises `WebhookRejected` with a fixed, short reason: reasons reach
logs and responses, so they never quote a secret, a signature or the body.
"""

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import load_der_public_key

DEFAULT_TOLERANCE_SECONDS = 300
# Unix seconds; twelve digits reach the year 33658, and nothing longer is a real clock.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# A DER ECDSA P-256 signature is at most 72 bytes, 96 base64 characters.
_MAX_SIGNATURE_CHARS = 128
_MAX_TOKEN_CHARS = 256
_HEX_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
# The order of P-256: s and n - s are both valid for one message, see sendgrid_replay_key.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class WebhookRejected(ValueError):  # noqa: N818 (the name callers match on)
    """A webhook request that must not be stored; `reason` is short and free of secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@lru_cache(maxsize=8)
def load_sendgrid_public_key(public_key_b64: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key from SendGrid's base64 DER (SubjectPublicKeyInfo) verification key.

    Raises ValueError (not WebhookRejected: this is configuration, not a request) when the text
    is not such a key.
    """
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64.strip(), validate=True))
    except (ValueError, UnsupportedAlgorithm):  # binascii.Error is a ValueError
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 key")
    return key


def _check_timestamp(timestamp: str, now: float, tolerance: int) -> None:
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise WebhookRejected("malformed timestamp")
    # Both directions: a signature from the future is as suspect as an old one, and the window
    # bounds how long a captured request stays usable.
    if abs(now - int(timestamp)) > tolerance:
        raise WebhookRejected("timestamp outside the allowed window")


def _decode_signature(signature_b64: str) -> bytes:
    if not signature_b64 or len(signature_b64) > _MAX_SIGNATURE_CHARS:
        raise WebhookRejected("malformed signature")
    try:
        return base64.b64decode(signature_b64, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        raise WebhookRejected("malformed signature") from None


def verify_sendgrid(
    public_key_b64: str,
    signature_b64: str,
    timestamp: str,
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check SendGrid's Signed Event Webhook headers against the raw body.

    `signature_b64` and `timestamp` are the `X-Twilio-Email-Event-Webhook-Signature` and
    `-Timestamp` headers; the signed bytes are the timestamp exactly as sent, then the body.
    """
    key = load_sendgrid_public_key(public_key_b64)
    _check_timestamp(timestamp, now, tolerance)
    signature = _decode_signature(signature_b64)
    try:
        key.verify(signature, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookRejected("bad signature") from None


def sendgrid_replay_key(signature_b64: str) -> str:
    """The replay key of a verified SendGrid signature: the signature in its low-s form.

    ECDSA signatures are malleable: whoever captured (r, s) can post (r, n - s), which verifies
    just the same. Keying replays on the raw header would let that copy through, so both forms
    map to one key, which for a low-s signature is the header itself.
    """
    r, s = decode_dss_signature(_decode_signature(signature_b64))
    canonical = encode_dss_signature(r, min(s, _P256_ORDER - s))
    return base64.b64encode(canonical).decode("ascii")


def verify_mailgun(
    signing_key: str,
    payload: Mapping[str, Any],
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Check the `signature` object of a Mailgun webhook body; returns its token, the replay key.

    The token is a one-time value: the caller must refuse a second request that carries it.
    """
    block = payload.get("signature")
    if not isinstance(block, Mapping):
        raise WebhookRejected("missing signature")
    timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
    # Mailgun sends the timestamp as a string; an integer means the same digits.
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not isinstance(timestamp, str):
        raise WebhookRejected("malformed timestamp")
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
        raise WebhookRejected("malformed token")
    if not isinstance(signature, str) or not _HEX_SHA256_RE.fullmatch(signature):
        raise WebhookRejected("malformed signature")
    _check_timestamp(timestamp, now, tolerance)
    expected = hmac.new(
        signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise WebhookRejected("bad signature")
    return token


def verify_postmark(username: str, password: str, authorization: str | None) -> None:
    """Check the HTTP Basic credentials Postmark sends with each webhook call."""
    if authorization is None:
        raise WebhookRejected("missing credentials")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise WebhookRejected("not basic authentication")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, a non-ASCII character, or UnicodeDecodeError
        raise WebhookRejected("malformed credentials") from None
    given_user, colon, given_password = decoded.partition(":")
    if not colon:
        raise WebhookRejected("malformed credentials")
    # Both comparisons always run, so the timing does not tell which half was wrong.
    user_ok = hmac.compare_digest(given_user.encode("utf-8"), username.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password.encode("utf-8"), password.encode("utf-8"))
    if not (user_ok and password_ok):
        raise WebhookRejected("bad credentials")
