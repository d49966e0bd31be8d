"""The `GeneratedMessage` insert both writers share: a new lead's step, and a step backfill."""

from sqlalchemy import TextClause, bindparam, text

from db.base import UTCDateTime

# The JSON type of each column of `core.generation.generate.MessageContent`.
CONTENT_COLUMNS = {
    "subject": "text",
    "body": "text",
    "model": "text",
    "promptVersion": "text",
    "inputHash": "text",
    "promptTokens": "int",
    "completionTokens": "int",
    "latencyMs": "int",
    "costUsd": "numeric",
    "fallbackReason": "text",
    "cachedTokens": "int",
    "cachedCostUsd": "numeric",
    "pricing": "text",
    "status": "text",
    "reviewReason": "text",
    "variantKey": "text",
}


def insert_messages(*, keys: str, join: str, owner: str, on_conflict: str = "") -> TextClause:
    """One new message per JSON row: its `messageId` and its `MessageContent` columns.

    Each row also carries `keys` (its typed recordset columns), which `join` follows to the
    message's campaign, lead and step (`owner`, three expressions).
    """
    columns = ", ".join(f'"{name}"' for name in CONTENT_COLUMNS)
    values = ", ".join(f'x."{name}"' for name in CONTENT_COLUMNS)
    types = ", ".join(f'"{name}" {kind}' for name, kind in CONTENT_COLUMNS.items())
    return text(
        f"""
    INSERT INTO "GeneratedMessage" (id, "campaignId", "leadId", "stepId", "createdAt", {columns})
    SELECT x."messageId", {owner}, :now, {values}
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({keys}, "messageId" text, {types})
    {join}
    {on_conflict}
    """
    ).bindparams(bindparam("now", type_=UTCDateTime))
