"""Rows passed to set-based statements as one JSON array (`jsonb_to_recordset`)."""

import json
from datetime import datetime
from decimal import Decimal
from typing import Any


def json_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a JSON array; datetimes in ISO 8601, decimals as exact strings."""
    return json.dumps(rows, default=_encode)


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value))
