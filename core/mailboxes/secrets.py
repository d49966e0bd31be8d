"""What a mailbox's resolved password must never reach: a server answer that is logged or shown."""


def masked(answer: str, secret: str | None) -> str:
    """The server's answer with the password replaced, should a server ever echo it."""
    return answer.replace(secret, "***") if secret else answer
