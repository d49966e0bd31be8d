"""Unsubscribe tokens: only the secret's holder can make one, and each names one send."""

import base64
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.delivery.unsubscribe import (
    load_secret,
    secret_from_settings,
    sign_token,
    unsubscribe_mailto,
    unsubscribe_url,
    verify_token,
)
from core.settings import Settings

SECRET = b"0123456789abcdef-test-secret"
SEND_ID = "0f3c9ab1d2e34f5a8b6c7d8e9f0a1b2c"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip():
    token = sign_token(SECRET, SEND_ID)

    assert verify_token(SECRET, token) == SEND_ID
    assert "=" not in token
    assert token.split(".")[0] == _b64(SEND_ID.encode())


def test_any_send_id_round_trips():
    for send_id in ["a", "id with spaces", "ünï/côdé?&=", "x" * 300]:
        assert verify_token(SECRET, sign_token(SECRET, send_id)) == send_id


def test_signing_is_deterministic_and_bound_to_the_send():
    assert sign_token(SECRET, SEND_ID) == sign_token(SECRET, SEND_ID)
    assert sign_token(SECRET, SEND_ID) != sign_token(SECRET, SEND_ID + "x")


def _flip_last(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


def test_forgeries_are_refused():
    token = sign_token(SECRET, SEND_ID)
    payload, signature = token.split(".")
    other = sign_token(SECRET, "another-send")
    other_payload, other_signature = other.split(".")
    forged = [
        f"{payload}.{_flip_last(signature)}",  # tampered signature
        f"{_b64(b'another-send')}.{signature}",  # tampered payload
        f"{other_payload}.{signature}",  # another send's id with this signature
        f"{payload}.{other_signature}",  # this id with another send's signature
        sign_token(b"a-different-secret-value", SEND_ID),  # wrong secret
        f"{payload}.{signature[:-1]}",  # truncated
        f"{payload[:-2]}.{signature}",  # truncated payload
        f"{payload}",  # no signature
        f".{signature}",  # no payload
        f"{payload}.{signature}.{signature}",  # extra part
        f"{payload}=.{signature}",  # padding
        f"{payload}.{signature}\n",  # trailing newline
        f"{payload}+/.{signature}",  # standard, not url-safe, alphabet
        "",
        ".",
        "garbage",
        "not base64!.not base64!",
        "é" * 10 + "." + "é" * 43,
        _b64(b"\xff\xfe") + "." + signature,  # payload that is not UTF-8
        f"{_b64(b'x' * 400)}.{signature}",  # overlong
        "A" * 600,
    ]
    for token_text in forged:
        assert verify_token(SECRET, token_text) is None, token_text


def test_non_canonical_base64_is_refused():
    token = sign_token(SECRET, "a")  # "YQ": the low bits of Q are unused padding
    payload, signature = token.split(".")
    assert payload == "YQ"

    assert verify_token(SECRET, f"YR.{signature}") is None


def test_token_longer_than_512_is_refused_even_when_signed():
    token = sign_token(SECRET, "x" * 400)

    assert len(token) > 512
    assert verify_token(SECRET, token) is None


def test_empty_send_id_or_secret_cannot_be_signed():
    with pytest.raises(ValueError, match="send id"):
        sign_token(SECRET, "")
    with pytest.raises(ValueError, match="secret"):
        sign_token(b"", SEND_ID)


def test_links():
    token = sign_token(SECRET, SEND_ID)

    assert unsubscribe_url("https://app.example.com/", token) == (
        f"https://app.example.com/unsubscribe/{token}"
    )
    assert unsubscribe_url("https://app.example.com", token) == (
        f"https://app.example.com/unsubscribe/{token}"
    )
    assert unsubscribe_mailto("unsub@example.com", token) == (
        f"mailto:unsub@example.com?subject=unsubscribe%20{token}"
    )


def test_configured_secret_is_used(tmp_path):
    assert load_secret("a" * 16, tmp_path) == b"a" * 16
    assert not list(tmp_path.iterdir())


def test_settings_name_the_secret_or_leave_it_to_the_kept_key(tmp_path):
    configured = Settings(_env_file=None, unsubscribe_secret=SecretStr("b" * 16))
    assert secret_from_settings(configured, tmp_path) == b"b" * 16
    assert not list(tmp_path.iterdir())
    kept = secret_from_settings(Settings(_env_file=None, unsubscribe_secret=None), tmp_path)
    assert kept == load_secret(None, tmp_path) and len(kept) >= 16


@pytest.mark.parametrize("configured", ["", "short", "a" * 15])
def test_short_configured_secret_is_refused(configured, tmp_path):
    with pytest.raises(ValueError, match="UNSUBSCRIBE_SECRET"):
        load_secret(configured, tmp_path)


def test_secret_file_is_created_once_and_private(tmp_path):
    data_dir = tmp_path / "nested" / "data"

    first = load_secret(None, data_dir)
    second = load_secret(None, data_dir)

    path = data_dir / "unsubscribe-secret"
    assert first == second
    assert len(first) >= 32
    assert path.read_text().strip().encode() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in data_dir.iterdir()] == ["unsubscribe-secret"]


def test_existing_secret_file_is_kept(tmp_path):
    (tmp_path / "unsubscribe-secret").write_text("kept-secret-value-0123456789\n")

    assert load_secret(None, tmp_path) == b"kept-secret-value-0123456789"


def test_truncated_secret_file_is_refused(tmp_path):
    (tmp_path / "unsubscribe-secret").write_text("\n")

    with pytest.raises(ValueError, match="unsubscribe-secret"):
        load_secret(None, tmp_path)


def test_racing_processes_agree_on_one_secret(tmp_path):
    data_dir = tmp_path / "data"
    children = []
    for _ in range(8):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report the key on the pipe; never return into pytest
            status = 1
            try:
                os.close(read_end)
                os.write(write_end, load_secret(None, data_dir))
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((pid, read_end))
    secrets_seen = set()
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as pipe:
            secrets_seen.add(pipe.read())
        assert os.waitpid(pid, 0)[1] == 0
    secrets_seen.add(load_secret(None, data_dir))

    assert len(secrets_seen) == 1
    assert [entry.name for entry in Path(data_dir).iterdir()] == ["unsubscribe-secret"]
