"""A minimal IMAP4rev1 server on loopback (asyncio in a thread), enough for imaplib.

Usage::

    with LoopbackIMAP(auth=("sam@seller.example", "secret")) as imap:
        uid = imap.add("INBOX", raw_bytes, datetime(2025, 11, 26, 10, 0, tzinfo=UTC))
        ...  # imaplib.IMAP4(imap.host, imap.port)
        imap.flags("INBOX", uid)  # frozenset() unless a client read the message

Commands: CAPABILITY, NOOP, LOGOUT, LOGIN, LIST (every folder, with its RFC 6154 special-use
attribute when ``create`` gave one), SELECT, EXAMINE (answering UIDVALIDITY and UIDNEXT),
UID SEARCH (ALL, SINCE date, UID set, or HEADER field text), UID FETCH with UID, FLAGS,
INTERNALDATE, RFC822.SIZE, BODY[], BODY.PEEK[] and RFC822. As on a real server, BODY[] and
RFC822 set ``\\Seen`` in a folder opened with SELECT (not EXAMINE), so a test can tell a peek
from a read. Anything else gets a tagged BAD. ``implicit_tls=True`` speaks TLS from the first
byte (like port 993); clients trust ``cert_path``, a self-signed certificate for localhost and
127.0.0.1. Bodies go out as ``{n}\\r\\n`` literals.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from tests.support.smtp_server import _self_signed

__all__ = ["LoopbackIMAP", "StoredMessage"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
# A quoted string (with backslash escapes), a parenthesis, or an atom (brackets allowed, so
# BODY.PEEK[] is one token). Client literals are not needed by imaplib's LOGIN or FETCH.
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([()])|([^\s()"]+)')
_FETCH_ITEMS = frozenset(
    {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY[]", "BODY.PEEK[]", "RFC822"}
)
_READS = frozenset({"BODY[]", "RFC822"})
_SEEN = "\\Seen"


@dataclass
class StoredMessage:
    """One message in a folder."""

    uid: int
    raw: bytes
    internal_date: datetime
    flags: set[str] = field(default_factory=set)


@dataclass
class _Folder:
    uidvalidity: int
    special_use: str | None = None  # e.g. "\\Sent", announced by LIST
    messages: list[StoredMessage] = field(default_factory=list)
    next_uid: int = 1


class _BadCommandError(Exception):
    """Answered with a tagged BAD carrying this text."""


@dataclass
class _Session:
    authenticated: bool = False
    folder: str | None = None
    readonly: bool = True


class LoopbackIMAP:
    """Threaded asyncio IMAP server on 127.0.0.1 with one account and in-memory folders."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] = ("sam@seller.example", "secret"),
        implicit_tls: bool = False,
        uidvalidity: int = 1764151200,
        uidnext: bool = True,
    ) -> None:
        self.auth = auth
        self.uidnext = uidnext  # False: SELECT answers no UIDNEXT (RFC 3501 has it a SHOULD)
        self.implicit_tls = implicit_tls
        self.uidvalidity = uidvalidity
        self.host = "127.0.0.1"
        self.port = 0
        self.cert_path: Path | None = None  # CA file for clients when implicit_tls is on
        self.commands: list[str] = []  # "TAG COMMAND args", LOGIN arguments redacted
        self.logins = 0  # successful LOGINs
        self._lock = threading.Lock()
        self._folders: dict[str, _Folder] = {"INBOX": _Folder(uidvalidity)}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> LoopbackIMAP:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind a free loopback port and serve on a background event loop until ``stop``."""
        context = None
        if self.implicit_tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="loopback-imap-")
            cert, key = _self_signed(Path(self._tmp.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.cert_path = cert
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="loopback-imap", daemon=True)
        self._thread.start()
        serving = asyncio.start_server(self._serve, sock=sock, ssl=context)
        self._server = asyncio.run_coroutine_threadsafe(serving, loop).result(timeout=10)

    def stop(self) -> None:
        """Close every connection, stop the loop thread, remove any generated certificate."""
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        # Closing a transport ends its handler's readline with EOF; cancelling the handler
        # instead would make asyncio log the CancelledError of a client-connected callback.
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    # -- mailbox content -------------------------------------------------------------------

    def create(self, folder: str, *, special_use: str | None = None) -> None:
        """Make an empty folder (``add`` makes one too), LISTed with ``special_use`` if given."""
        with self._lock:
            box = self._folders.setdefault(folder, _Folder(self.uidvalidity))
            box.special_use = special_use or box.special_use

    def add(self, folder: str, raw: bytes, internal_date: datetime) -> int:
        """Append a message (creating the folder); returns its UID."""
        if internal_date.utcoffset() is None:
            raise ValueError("internal_date must be timezone-aware")
        self.create(folder)
        with self._lock:
            box = self._folders[folder]
            uid = box.next_uid
            box.next_uid += 1
            box.messages.append(StoredMessage(uid, raw, internal_date))
            return uid

    def renumber(self, folder: str, uidvalidity: int) -> None:
        """A new UIDVALIDITY with the messages renumbered from 1, as a rebuilt folder is."""
        with self._lock:
            box = self._folders[folder]
            box.uidvalidity = uidvalidity
            for uid, message in enumerate(box.messages, start=1):
                message.uid = uid
            box.next_uid = len(box.messages) + 1

    def flags(self, folder: str, uid: int) -> frozenset[str]:
        """The flags of one message."""
        with self._lock:
            return frozenset(_find(self._folders[folder], uid).flags)

    # -- protocol (event-loop thread) ------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        session = _Session()
        try:
            writer.write(b"* OK LoopbackIMAP ready\r\n")
            while line := await reader.readline():
                if not line.endswith(b"\r\n"):
                    break  # connection closed mid-line
                reply, done = self._handle(session, line[:-2].decode("utf-8", "replace"))
                writer.write(reply)
                await writer.drain()
                if done:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # client went away, or sent a line over the StreamReader limit
        finally:
            self._connections.pop(task, None)
            writer.close()

    def _handle(self, session: _Session, line: str) -> tuple[bytes, bool]:
        """(every response line for the command, whether to close the connection)."""
        tag, _, rest = line.partition(" ")
        name, _, args = rest.partition(" ")
        name = name.upper()
        uid = name == "UID"
        if uid:
            name, _, args = args.partition(" ")
            name = f"UID {name.upper()}"
        shown = "***" if name == "LOGIN" else args
        with self._lock:
            self.commands.append(f"{tag} {name} {shown}".rstrip())
        if not tag or not rest:
            return f"{tag or '*'} BAD missing command\r\n".encode(), False
        try:
            with self._lock:
                untagged, status = self._dispatch(session, name, _tokens(args))
        except _BadCommandError as exc:
            return f"{tag} BAD {exc}\r\n".encode(), False
        return b"".join(untagged) + f"{tag} {status}\r\n".encode(), name == "LOGOUT"

    def _dispatch(
        self, session: _Session, name: str, args: list[object]
    ) -> tuple[list[bytes], str]:
        if name == "CAPABILITY":
            return [b"* CAPABILITY IMAP4rev1\r\n"], "OK CAPABILITY completed"
        if name == "NOOP":
            return [], "OK NOOP completed"
        if name == "LOGOUT":
            return [b"* BYE LoopbackIMAP logging out\r\n"], "OK LOGOUT completed"
        if name == "LOGIN":
            return self._login(session, args)
        if not session.authenticated:
            raise _BadCommandError(f"{name} needs LOGIN first")
        if name == "LIST":
            return self._list(args), "OK LIST completed"
        if name in ("SELECT", "EXAMINE"):
            return self._select(session, args, readonly=name == "EXAMINE")
        if session.folder is None:
            raise _BadCommandError(f"{name} needs SELECT or EXAMINE first")
        box = self._folders[session.folder]
        if name == "UID SEARCH":
            return _search(box, args), "OK UID SEARCH completed"
        if name == "UID FETCH":
            return _fetch(box, args, readonly=session.readonly), "OK UID FETCH completed"
        raise _BadCommandError(f"unsupported command {name}")

    def _login(self, session: _Session, args: list[object]) -> tuple[list[bytes], str]:
        if session.authenticated:
            raise _BadCommandError("already logged in")
        if len(args) != 2 or not all(isinstance(arg, str) for arg in args):
            raise _BadCommandError("LOGIN takes a user name and a password")
        if tuple(args) != self.auth:
            return [], "NO [AUTHENTICATIONFAILED] Invalid credentials"
        session.authenticated = True
        self.logins += 1
        return [], "OK LOGIN completed"

    def _list(self, args: list[object]) -> list[bytes]:
        if len(args) != 2 or args[1] not in ("*", "%"):
            raise _BadCommandError('LIST supports "" "*" only')
        lines = []
        for name, box in self._folders.items():
            attributes = " ".join(["\\HasNoChildren", *filter(None, [box.special_use])])
            lines.append(f'* LIST ({attributes}) "/" "{name}"\r\n'.encode())
        return lines

    def _select(
        self, session: _Session, args: list[object], *, readonly: bool
    ) -> tuple[list[bytes], str]:
        if len(args) != 1 or not isinstance(args[0], str):
            raise _BadCommandError("SELECT takes one mailbox name")
        name = "INBOX" if args[0].upper() == "INBOX" else args[0]
        session.folder = None  # a failed SELECT leaves no folder selected (RFC 3501 6.3.1)
        box = self._folders.get(name)
        if box is None:
            return [], "NO [NONEXISTENT] Mailbox does not exist"
        session.folder, session.readonly = name, readonly
        lines = [
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
            f"* {len(box.messages)} EXISTS\r\n".encode(),
            b"* 0 RECENT\r\n",
            f"* OK [UIDVALIDITY {box.uidvalidity}] UIDs valid\r\n".encode(),
        ]
        if self.uidnext:
            lines.append(f"* OK [UIDNEXT {box.next_uid}] Predicted next UID\r\n".encode())
        if not readonly:
            lines.append(b"* OK [PERMANENTFLAGS (\\Seen \\Deleted)] Limited\r\n")
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        return lines, f"OK [{mode}] {'EXAMINE' if readonly else 'SELECT'} completed"


def _tokens(args: str) -> list[object]:
    """Atoms and quoted strings as str, parenthesised lists as nested lists."""
    stack: list[list[object]] = [[]]
    position = 0
    for match in _TOKEN.finditer(args):
        if args[position : match.start()].strip():
            raise _BadCommandError("unsupported syntax (literals are not accepted)")
        position = match.end()
        quoted, paren, atom = match.groups()
        if paren == "(":
            stack.append([])
        elif paren == ")":
            if len(stack) == 1:
                raise _BadCommandError("unbalanced parentheses")
            inner = stack.pop()
            stack[-1].append(inner)
        elif quoted is not None:
            stack[-1].append(re.sub(r"\\(.)", r"\1", quoted))
        else:
            stack[-1].append(atom)
    if args[position:].strip() or len(stack) != 1:
        raise _BadCommandError("unsupported syntax")
    return stack[0]


def _search(box: _Folder, args: list[object]) -> list[bytes]:
    if len(args) == 1 and str(args[0]).upper() == "ALL":
        found = box.messages
    elif len(args) == 2 and str(args[0]).upper() == "SINCE":
        since = _parse_date(str(args[1]))
        # RFC 3501: the internal date's day, disregarding time and timezone.
        found = [message for message in box.messages if message.internal_date.date() >= since]
    elif len(args) == 2 and str(args[0]).upper() == "UID":
        wanted = _uid_set(str(args[1]), max((message.uid for message in box.messages), default=0))
        found = [message for message in box.messages if message.uid in wanted]
    elif len(args) == 3 and str(args[0]).upper() == "HEADER":
        # RFC 3501: the field's value contains the text, case-insensitively.
        field_name, text = str(args[1]), str(args[2]).lower()
        found = [
            message
            for message in box.messages
            if any(
                text in str(value).lower()
                for value in BytesHeaderParser().parsebytes(message.raw).get_all(field_name, [])
            )
        ]
    else:
        raise _BadCommandError("UID SEARCH supports ALL, SINCE <date>, UID <set> or HEADER only")
    uids = " ".join(str(message.uid) for message in found)
    return [f"* SEARCH {uids}".rstrip().encode() + b"\r\n"]


def _fetch(box: _Folder, args: list[object], *, readonly: bool) -> list[bytes]:
    if len(args) != 2 or not isinstance(args[0], str):
        raise _BadCommandError("UID FETCH takes a UID set and fetch items")
    items = args[1] if isinstance(args[1], list) else [args[1]]
    names = [str(item).upper() for item in items]
    unknown = [name for name in names if name not in _FETCH_ITEMS]
    if unknown or not all(isinstance(item, str) for item in items):
        raise _BadCommandError(f"unsupported fetch items {unknown or items}")
    if "UID" not in names:
        names.insert(0, "UID")  # RFC 3501 6.4.8: UID FETCH always reports the UID
    wanted = _uid_set(args[0], max((message.uid for message in box.messages), default=0))
    lines = []
    for sequence, message in enumerate(box.messages, start=1):
        if message.uid not in wanted:
            continue
        changed = not readonly and _SEEN not in message.flags and bool(_READS & set(names))
        if changed:
            message.flags.add(_SEEN)
        parts = [_fetch_item(message, name) for name in names]
        if changed and "FLAGS" not in names:
            parts.append(_fetch_item(message, "FLAGS"))  # the change is announced
        lines.append(f"* {sequence} FETCH (".encode() + b" ".join(parts) + b")\r\n")
    return lines


def _fetch_item(message: StoredMessage, name: str) -> bytes:
    if name == "UID":
        return f"UID {message.uid}".encode()
    if name == "FLAGS":
        return f"FLAGS ({' '.join(sorted(message.flags))})".encode()
    if name == "INTERNALDATE":
        return f'INTERNALDATE "{_internal_date(message.internal_date)}"'.encode()
    if name == "RFC822.SIZE":
        return f"RFC822.SIZE {len(message.raw)}".encode()
    label = "RFC822" if name == "RFC822" else "BODY[]"  # BODY.PEEK[] is answered as BODY[]
    return f"{label} {{{len(message.raw)}}}\r\n".encode() + message.raw


def _uid_set(text: str, highest: int) -> set[int]:
    """A UID sequence set (`1,3:5,7:*`); `*` is the highest UID in the folder."""
    uids: set[int] = set()
    for piece in text.split(","):
        first, _, last = piece.partition(":")
        try:
            low = highest if first == "*" else int(first)
            high = low if not last else highest if last == "*" else int(last)
        except ValueError:
            raise _BadCommandError(f"bad sequence set {text}") from None
        # UIDs above the highest do not exist; clamping keeps `1:4294967295` cheap.
        uids.update(range(min(low, high), min(max(low, high), highest) + 1))
    return uids


def _parse_date(text: str) -> date:
    match = _DATE.fullmatch(text)
    months = [month.upper() for month in _MONTHS]
    if match is None or match.group(2).upper() not in months:
        raise _BadCommandError(f"bad date {text}")
    day, month, year = match.groups()
    return date(int(year), months.index(month.upper()) + 1, int(day))


def _internal_date(moment: datetime) -> str:
    offset = moment.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    month = _MONTHS[moment.month - 1]
    return f"{moment.day:2d}-{month}-{moment.year:04d} {moment:%H:%M:%S} {zone}"


def _find(box: _Folder, uid: int) -> StoredMessage:
    for message in box.messages:
        if message.uid == uid:
            return message
    raise KeyError(uid)
