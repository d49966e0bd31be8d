"""IMAP wire details every reader of a mailbox needs: quoting, and a server's error text."""


def quoted(text: str) -> str:
    """An IMAP quoted string (imaplib quotes passwords only)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def error_text(exc: BaseException) -> str:
    """An imaplib error's server text (imaplib passes bytes through), else str()."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", "replace")
    return str(exc) or type(exc).__name__
