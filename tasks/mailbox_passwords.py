"""Resolving a mailbox's password reference: an environment variable or a Prefect Secret block.

Lives outside core/ and db/ because a `prefect-secret:` reference needs Prefect's API. The
password stays a SecretStr; nothing here logs or prints it.
"""

import asyncio
import os
from collections.abc import Mapping

import pydantic
from pydantic import SecretStr

from core.mailboxes.check import PasswordUnavailableError
from core.mailboxes.mailbox_file import PasswordRef, SecretScheme


def resolve_password(ref: PasswordRef, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The password `ref` points at; PasswordUnavailableError says which reference and why."""
    if ref.scheme is SecretScheme.env:
        value = (os.environ if environ is None else environ).get(ref.name)
        if not value:
            raise PasswordUnavailableError(f"{ref}: the environment variable {ref.name} is not set")
        return SecretStr(value)
    return _prefect_secret(ref)


def _prefect_secret(ref: PasswordRef) -> SecretStr:
    # Imported here: resolving env: references must not pay for importing Prefect.
    from prefect.blocks.system import Secret

    try:
        block: Secret[str] = asyncio.run(Secret.aload(ref.name))
    # Prefect raises ValueError for a missing block and httpx or runtime errors for an API it
    # cannot reach; each is an answer to print for this mailbox, not a crash of the command.
    except Exception as exc:
        raise PasswordUnavailableError(
            f"{ref}: cannot load the Prefect Secret block {ref.name!r}: {exc}"
        ) from None
    # The block's raw value, not Secret.get(), which would turn a password of digits into a number.
    raw = block.value
    value = raw.get_secret_value() if isinstance(raw, pydantic.Secret | SecretStr) else raw
    if not isinstance(value, str) or not value:
        raise PasswordUnavailableError(f"{ref}: the Prefect Secret block holds no text")
    return SecretStr(value)
