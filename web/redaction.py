"""What must never reach a log line: unsubscribe tokens in paths, and drivers' error messages."""

import re

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

_TOKEN_IN_PATH = re.compile(r"(/unsubscribe/)[^/?#\s\"]+")


def redact_tokens(text: str) -> str:
    """`text` with every unsubscribe token in a path replaced by ***."""
    return _TOKEN_IN_PATH.sub(r"\1***", text)


def error_name(exc: SQLAlchemyError) -> str:
    """The error's class and SQLSTATE, for a log line."""
    # The class and SQLSTATE only: a driver's message can quote a row, and with it an address.
    if isinstance(exc, DBAPIError):
        orig = type(exc.orig)
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return f"{orig.__module__}.{orig.__qualname__}" + (
            f", SQLSTATE {sqlstate}" if sqlstate else ""
        )
    return type(exc).__name__
