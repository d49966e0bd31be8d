"""Text primary keys, chosen in Python so a retried write reuses them."""

import secrets
import time
import uuid


def new_id() -> str:
    """A text primary key; Prisma's cuid() is text too, so any unique string fits."""
    return uuid.uuid4().hex


def ordered_id_prefix() -> str:
    """26 hex digits, ascending with time: a batch's ids are this plus a 6-digit position.

    Nanoseconds since the epoch (16 digits) and 40 random bits, so two batches in the same
    nanosecond still differ.
    """
    return f"{time.time_ns():016x}{secrets.token_hex(5)}"
