"""Rows passed to set-based statements as one JSON array (`jsonb_to_recordset`), and statements
sent compacted."""

from decimal import Decimal
from typing import Any

import orjson


def json_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a JSON array; datetimes in ISO 8601, decimals as exact strings.

    orjson rather than the stdlib: encoding a chunk's rows took a tenth of an ingestion's time.
    """
    return orjson.dumps(rows, default=_encode).decode()


def _encode(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value))


def compact(sql: str) -> str:
    """`sql` with each run of whitespace made one space: for a statement without `--` comments
    nor string literals holding runs of spaces, the same statement, shorter on the wire and in
    the driver's caches."""
    if "--" in sql:
        raise ValueError("a -- comment would swallow the rest of the compacted statement")
    return " ".join(sql.split())
