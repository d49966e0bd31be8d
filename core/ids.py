"""Text primary keys, chosen in Python so a retried write reuses them."""

import uuid


def new_id() -> str:
    """A text primary key; Prisma's cuid() is text too, so any unique string fits."""
    return uuid.uuid4().hex
