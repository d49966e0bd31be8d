"""`prefect-secret:NAME` references resolve through a real Prefect Secret block (the harness)."""

import pytest
from prefect.blocks.system import Secret

from core.mailboxes.check import PasswordUnavailableError
from core.mailboxes.mailbox_file import PasswordRef
from tasks.mailbox_passwords import resolve_password


def test_a_secret_block_resolves_and_a_missing_one_is_named(prefect_harness):
    Secret(value="s3cret-pw").save("alex-smtp", overwrite=True)
    resolved = resolve_password(PasswordRef.parse("prefect-secret:alex-smtp"))
    assert resolved.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(resolved)
    with pytest.raises(PasswordUnavailableError, match="'nobody-smtp'") as caught:
        resolve_password(PasswordRef.parse("prefect-secret:nobody-smtp"))
    assert str(caught.value).startswith("prefect-secret:nobody-smtp: cannot load the Prefect")
