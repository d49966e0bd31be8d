"""Signed unsubscribe tokens: each names one EmailSend, and so exactly one lead.

A token is `b64url(send id).b64url(HMAC-SHA256(secret, "unsubscribe:v1:" + send id))`, both
without padding. Only the holder of the secret can make one, so a link cannot be edited to
unsubscribe somebody else.
"""

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path
from urllib.parse import quote

from core.settings import PROJECT_ROOT, Settings

MAX_TOKEN_LENGTH = 512
MIN_SECRET_LENGTH = 16
SECRET_FILE_NAME = "unsubscribe-secret"
_CONTEXT = b"unsubscribe:v1:"
# SHA-256 is 32 bytes: 43 unpadded base64 characters.
_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]{43}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_token(secret: bytes, send_id: str) -> str:
    """The token for `send_id`, signed with `secret`."""
    if not secret or not send_id:
        raise ValueError("an unsubscribe token needs a secret and a send id")
    payload = send_id.encode("utf-8")
    signature = hmac.new(secret, _CONTEXT + payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def verify_token(secret: bytes, token: str) -> str | None:
    """The send id `token` was signed for, or None when it is not a token this secret made."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    encoded = match.group(1)
    try:
        send_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        return None
    if not send_id:
        return None
    # Comparing whole tokens also refuses non-canonical base64 spellings of the same id.
    expected = sign_token(secret, send_id)
    if not hmac.compare_digest(expected.encode("ascii"), token.encode("ascii")):
        return None
    return send_id


def unsubscribe_url(base_url: str, token: str) -> str:
    """The one-click https link served by the unsubscribe endpoint."""
    return f"{base_url.rstrip('/')}/unsubscribe/{token}"


def unsubscribe_mailto(mailbox: str, token: str) -> str:
    """A mailto link whose subject carries the token, for clients that only send mail."""
    return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"


def secret_from_settings(settings: Settings, data_dir: Path = PROJECT_ROOT / ".data") -> bytes:
    """The unsubscribe key `settings` name, else the one kept in `data_dir` (see load_secret)."""
    configured = settings.unsubscribe_secret
    return load_secret(configured.get_secret_value() if configured is not None else None, data_dir)


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """UNSUBSCRIBE_SECRET when set; else the key kept in `data_dir`, made on first use.

    Losing or changing the key breaks every unsubscribe link already sent, so it is kept on disk
    rather than made per process.
    """
    if configured is not None:
        if len(configured) < MIN_SECRET_LENGTH:
            raise ValueError(f"UNSUBSCRIBE_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return configured.encode("utf-8")
    path = data_dir / SECRET_FILE_NAME
    if not path.exists():
        _create_secret(path)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"{path} holds fewer than {MIN_SECRET_LENGTH} characters")
    return secret.encode("utf-8")


def _create_secret(path: Path) -> None:
    """Write a fresh key to `path` unless another process got there first.

    An O_EXCL create of `path` itself would let a racing reader see the file still empty. The key
    is written and synced under a private temporary name (mkstemp: O_EXCL, mode 0600) and then
    hard-linked into place, which fails if `path` exists: exactly one key ever becomes visible,
    and only complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        # FileExistsError: another process linked its key first, and everyone uses that one.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
