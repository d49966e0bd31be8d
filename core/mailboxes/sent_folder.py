"""Looking up Message-IDs in a mailbox's Sent folder over IMAP, read-only.

The folder is the one LIST marks `\\Sent` (RFC 6154 SPECIAL-USE), else the first of the usual
names. One `UID SEARCH HEADER Message-ID` per message, then one `UID FETCH (INTERNALDATE)` for
every match; nothing is read, flagged, moved or deleted.
"""

import contextlib
import imaplib
import re
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, SecretStr

from core.mailboxes.imap_wire import error_text, quoted
from core.mailboxes.mailbox_file import ImapSpec
from core.mailboxes.secrets import masked

DEFAULT_IMAP_TIMEOUT = 30.0
SENT_ATTRIBUTE = "\\sent"
# Gmail's English name, Microsoft's, Apple's, and the plain one most servers use.
FALLBACK_NAMES = ("Sent", "[Gmail]/Sent Mail", "Sent Items", "Sent Messages")

# `(\HasNoChildren \Sent) "/" "Sent Items"`: attributes, delimiter, then the name (quoted, an
# atom, or a literal that imaplib hands over separately).
_LIST_LINE = re.compile(rb'^\((?P<attributes>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) ?(?P<name>.*)$')
_INTERNALDATE = re.compile(
    rb'UID (?P<uid>\d+).*INTERNALDATE "(?P<date>[^"]+)"|'
    rb'INTERNALDATE "(?P<date2>[^"]+)".*UID (?P<uid2>\d+)'
)


class SentFolderError(Exception):
    """The mailbox could not be searched: the step and what the server or network said."""


class Folder(BaseModel):
    """One LIST answer: a folder's name as the server spells it, and its attributes."""

    model_config = ConfigDict(frozen=True)

    name: str
    attributes: frozenset[str]


class SentSearch(BaseModel):
    """Which Message-IDs the Sent folder holds, each with the time the server filed it."""

    folder: str
    found: dict[str, datetime]


def parse_list_line(item: bytes | tuple[bytes, bytes]) -> Folder | None:
    """One LIST data item as imaplib returns it (a tuple when the name came as a literal)."""
    head, literal = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
    match = _LIST_LINE.match(head)
    if match is None:
        return None
    raw_name = literal if literal is not None else match["name"]
    name = raw_name.decode("utf-8", "replace")
    if literal is None and name.startswith('"') and name.endswith('"') and len(name) >= 2:
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    attributes = frozenset(
        a.lower() for a in match["attributes"].decode("ascii", "replace").split()
    )
    return Folder(name=name, attributes=attributes)


def choose_sent_folder(folders: Sequence[Folder]) -> str | None:
    """The folder marked `\\Sent`, else the first usual name present (any case), else None."""
    for folder in folders:
        if SENT_ATTRIBUTE in folder.attributes and "\\noselect" not in folder.attributes:
            return folder.name
    by_name = {folder.name.lower(): folder.name for folder in folders}
    for name in FALLBACK_NAMES:
        if name.lower() in by_name:
            return by_name[name.lower()]
    return None


def parse_internaldate(text: bytes) -> datetime:
    """`" 4-Dec-2026 23:55:56 +0000"` as an aware UTC datetime."""
    return datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)


def search_sent_folder(
    spec: ImapSpec,
    password: SecretStr,
    message_ids: Sequence[str],
    *,
    timeout: float = DEFAULT_IMAP_TIMEOUT,
    tls: ssl.SSLContext | None = None,
) -> SentSearch:
    """Log in, find the Sent folder, and look each Message-ID up; SentFolderError on failure."""
    secret = password.get_secret_value()
    step = "connect"
    client: imaplib.IMAP4 | None = None
    try:
        if spec.ssl:
            context = tls or ssl.create_default_context()
            client = imaplib.IMAP4_SSL(spec.host, spec.port, ssl_context=context, timeout=timeout)
        else:
            client = imaplib.IMAP4(spec.host, spec.port, timeout=timeout)
        step = "LOGIN"
        client.login(quoted(spec.username), secret)
        step = "LIST"
        folder = _sent_folder(client)
        step = f"EXAMINE {folder}"
        _ok(client.select(quoted(folder), readonly=True))
        step = "UID SEARCH"
        uids = {mid: uid for mid in message_ids if (uid := _search(client, mid)) is not None}
        step = "UID FETCH"
        filed = _internal_dates(client, set(uids.values()))
    except imaplib.IMAP4.error as exc:
        raise SentFolderError(masked(f"{step} refused: {error_text(exc)}", secret)) from None
    except (OSError, ValueError) as exc:
        raise SentFolderError(masked(f"{step} failed: {error_text(exc)}", secret)) from None
    finally:
        if client is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()
    # A message found without a date (a server that omits it) is still found: now is close.
    return SentSearch(
        folder=folder,
        found={mid: filed.get(uid) or datetime.now(UTC) for mid, uid in uids.items()},
    )


def _sent_folder(client: imaplib.IMAP4) -> str:
    status, data = client.list('""', "*")
    _ok((status, data))
    folders = [f for item in data if item is not None and (f := parse_list_line(item)) is not None]
    chosen = choose_sent_folder(folders)
    if chosen is None:
        raise imaplib.IMAP4.error(
            "no folder is marked \\Sent and none is named " + ", ".join(FALLBACK_NAMES)
        )
    return chosen


def _search(client: imaplib.IMAP4, message_id: str) -> str | None:
    """The UID of the message with this Message-ID (the header holds exactly `<…>`), if any."""
    data = _ok(client.uid("SEARCH", "HEADER", "Message-ID", quoted(message_id)))
    found = data[0].split() if data and isinstance(data[0], bytes) else []
    return found[0].decode("ascii") if found else None


def _internal_dates(client: imaplib.IMAP4, uids: set[str]) -> dict[str, datetime]:
    if not uids:
        return {}
    data = _ok(client.uid("FETCH", ",".join(sorted(uids, key=int)), "(UID INTERNALDATE)"))
    dates = {}
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        if isinstance(line, bytes) and (match := _INTERNALDATE.search(line)):
            uid = (match["uid"] or match["uid2"]).decode("ascii")
            dates[uid] = parse_internaldate(match["date"] or match["date2"])
    return dates


def _ok(answer: tuple[str, Sequence[object]]) -> Sequence[object]:
    status, data = answer
    if status != "OK":
        raise imaplib.IMAP4.error(data[0] if data else status)
    return data
