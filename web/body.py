"""Reading a request body with a bound, shared by the unsubscribe and webhook endpoints."""

from fastapi import Request


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it declares or grows past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
