"""Reading inbound mail, strictly read-only: a Maildir, an mbox file, or a folder over IMAP.

Each reader yields (key, what `classify_message` made of the message). No file is moved or
deleted and no IMAP flag is set: ingestion is idempotent by dedupe key, so reading the same
folder again is safe. `IMAPSource.read_new` reads only what came after a checkpoint.
"""

import contextlib
import imaplib
import mailbox
import re
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path

from core.engagement.inbound import InboundResult, classify_message
from core.mailboxes.imap_wire import error_text, quoted

__all__ = [
    "IMAPCheckpoint",
    "IMAPSource",
    "InboundSourceError",
    "NewMail",
    "SettingNames",
    "read_mail_path",
]

_IMAP_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMAP_UID_RE = re.compile(rb"\bUID (\d+)")


class InboundSourceError(ValueError):
    """The mail folder cannot be opened or read; str() names the setting to check."""


class SettingNames(StrEnum):
    """How an error names the setting at fault: `IMAP_HOST`, or a mailbox's `imap.host`."""

    environment = "IMAP_"
    mailbox_file = "imap."

    def of(self, field: str) -> str:
        """The setting that holds `field` (host, port, ssl, username, password, folder)."""
        return f"{self.value}{field.upper() if self is SettingNames.environment else field}"


@dataclass(frozen=True)
class IMAPCheckpoint:
    """How far a folder has been read: its UIDVALIDITY and the highest UID read under it."""

    uid_validity: int
    last_uid: int


@dataclass(frozen=True)
class NewMail:
    """What `IMAPSource.read_new` found after a checkpoint, and the checkpoint to keep next."""

    results: list[InboundResult]
    checkpoint: IMAPCheckpoint
    searched: bool  # False: the folder's UIDNEXT said nothing was new, so nothing was asked


def read_mail_path(path: Path, *, source: str | None = None) -> Iterator[tuple[str, InboundResult]]:
    """Every message of a Maildir (new/ and cur/) or an mbox file, as (key, result).

    Maildir keys are the file names without flags, in sorted (delivery time) order; mbox keys
    are 0, 1, … in file order. `line` in results is the 1-based position. Dotfiles are not
    messages. Nothing is moved, flagged or deleted.
    """
    if path.is_dir():
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise InboundSourceError(f"{path}: a directory without cur/ and new/ is not a Maildir")
        box: mailbox.Mailbox = mailbox.Maildir(path, factory=None, create=False)
        label = source or f"maildir:{path}"
    elif path.is_file():
        box = mailbox.mbox(path, factory=None, create=False)
        label = source or f"mbox:{path}"
    else:
        raise InboundSourceError(f"{path}: no such Maildir or mbox file")
    try:
        keys = sorted(key for key in box.iterkeys() if not str(key).startswith("."))
        for position, key in enumerate(keys, start=1):
            try:
                raw = box.get_bytes(key)
            except KeyError:
                continue  # removed by a mail client since the listing: nothing left to read
            yield str(key), classify_message(raw, source=label, line=position)
    finally:
        box.close()


class IMAPSource:
    """A folder on an IMAP server, read with EXAMINE and BODY.PEEK[] so nothing is marked."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        folder: str,
        *,
        use_ssl: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        since: date | None = None,
        timeout: float = 30.0,
        chunk_size: int = 50,
        names: SettingNames = SettingNames.environment,
    ) -> None:
        self.names = names
        if not folder.isascii():
            # Non-ASCII names need IMAP's modified UTF-7, which imaplib does not do.
            raise InboundSourceError(
                f"{self._n('folder')}={folder!r}: only ASCII folder names are supported"
            )
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.folder = folder
        self.use_ssl = use_ssl
        self.ssl_context = ssl_context
        self.since = since
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.source = f"imap:{username}@{host}/{folder}"

    def fetch(self) -> Iterator[tuple[str, InboundResult]]:
        """Every message in the folder (or since `since`), in UID order, as (key, result).

        The key is `uidvalidity:uid`, stable for as long as the server keeps the folder's
        UIDVALIDITY. Raises InboundSourceError naming the setting at fault.
        """
        client = self._connect()
        try:
            self._login(client)
            uidvalidity = self._examine(client)
            uids = self._search(client)
            for start in range(0, len(uids), self.chunk_size):
                for uid, raw in self._fetch_chunk(client, uids[start : start + self.chunk_size]):
                    result = classify_message(raw, source=self.source, line=uid)
                    yield f"{uidvalidity}:{uid}", result
        except (imaplib.IMAP4.error, OSError) as exc:
            raise InboundSourceError(
                f"{self._n('host')}={self.host}:{self.port}: reading {self.folder!r} failed: "
                f"{error_text(exc)}"
            ) from exc
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def read_new(self, checkpoint: IMAPCheckpoint | None) -> NewMail:
        """The messages after `checkpoint` (all of them without one, or when UIDVALIDITY changed).

        EXAMINE answers UIDVALIDITY and UIDNEXT, so an unchanged folder costs no SEARCH and no
        FETCH. `since` does not apply: the checkpoint already says where to start.
        """
        client = self._connect()
        try:
            self._login(client)
            uid_validity = int(self._examine(client))
            last = (
                checkpoint.last_uid if checkpoint and checkpoint.uid_validity == uid_validity else 0
            )
            uid_next = _uid_next(client)
            if uid_next is not None and uid_next <= last + 1:
                return NewMail([], IMAPCheckpoint(uid_validity, last), searched=False)
            uids = self._search(client, after=last)
            results: list[InboundResult] = []
            for start in range(0, len(uids), self.chunk_size):
                for uid, raw in self._fetch_chunk(client, uids[start : start + self.chunk_size]):
                    results.append(classify_message(raw, source=self.source, line=uid))
            # UIDNEXT - 1 was taken before SEARCH: anything newer has a UID above it, or was read.
            highest = max([last, *uids, (uid_next or 1) - 1])
            return NewMail(results, IMAPCheckpoint(uid_validity, highest), searched=True)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise InboundSourceError(
                f"{self._n('host')}={self.host}:{self.port}: reading {self.folder!r} failed: "
                f"{error_text(exc)}"
            ) from exc
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def _n(self, field: str) -> str:
        return self.names.of(field)  # short: it is in nearly every error message

    def _connect(self) -> imaplib.IMAP4:
        try:
            if self.use_ssl:
                # imaplib's own default context checks no certificate; this one does.
                context = self.ssl_context or ssl.create_default_context()
                return imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout
                )
            return imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except ssl.SSLError as exc:
            raise InboundSourceError(
                f"{self._n('host')}={self.host}:{self.port}: TLS failed: {error_text(exc)}; "
                f"check {self._n('ssl')} "
                f"(implicit TLS, usually {self._n('port')} 993) and the server's certificate"
            ) from exc
        except (imaplib.IMAP4.error, OSError) as exc:
            raise InboundSourceError(
                f"{self._n('host')}={self.host}:{self.port}: cannot connect: {error_text(exc)}; "
                f"check {self._n('host')}, {self._n('port')} and {self._n('ssl')}"
            ) from exc

    def _login(self, client: imaplib.IMAP4) -> None:
        try:
            # imaplib sends the user name as typed; quoted, any character is safe.
            client.login(quoted(self.username), self._password)
        except imaplib.IMAP4.error as exc:
            raise InboundSourceError(
                f"{self._n('username')}={self.username!r} could not log in to "
                f"{self._n('host')}={self.host}: "
                f"{error_text(exc)}; check {self._n('username')} and {self._n('password')}"
            ) from exc

    def _examine(self, client: imaplib.IMAP4) -> str:
        """Open the folder read-only; return its UIDVALIDITY."""
        status, data = client.select(quoted(self.folder), readonly=True)
        if status != "OK":
            raise InboundSourceError(
                f"{self._n('folder')}={self.folder!r} cannot be opened on "
                f"{self._n('host')}={self.host}: {_text_of(data)}"
            )
        _, values = client.response("UIDVALIDITY")
        if not values or values[0] is None:
            raise InboundSourceError(
                f"{self._n('host')}={self.host}: {self.folder!r} has no UIDVALIDITY"
            )
        return _text_of(values)

    def _search(self, client: imaplib.IMAP4, *, after: int | None = None) -> list[int]:
        """UIDs in the folder: after `after` when given, else since `since`, else all."""
        if after:
            criteria: tuple[str, ...] = ("UID", f"{after + 1}:*")
        elif self.since and after is None:
            criteria = ("SINCE", _imap_date(self.since))
        else:
            criteria = ("ALL",)
        status, data = client.uid("SEARCH", *criteria)
        if status != "OK":
            raise imaplib.IMAP4.error(f"UID SEARCH: {_text_of(data)}")
        # `n:*` always matches the highest UID, even one below n (RFC 3501 6.4.4).
        found = {int(uid) for line in data if line for uid in line.split()}
        return sorted(uid for uid in found if uid > (after or 0))

    def _fetch_chunk(self, client: imaplib.IMAP4, uids: list[int]) -> list[tuple[int, bytes]]:
        """(uid, raw message) for the UIDs the server still has, in UID order."""
        status, data = client.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
        if status != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH: {_text_of(data)}")
        wanted = set(uids)
        found: dict[int, bytes] = {}
        for index, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            prefix, literal = item
            # UID may come before the literal or in the bytes that close the response.
            following = data[index + 1] if index + 1 < len(data) else b""
            tail = following if isinstance(following, bytes) else b""
            match = _IMAP_UID_RE.search(prefix) or _IMAP_UID_RE.search(tail)
            if match and int(match.group(1)) in wanted:
                found[int(match.group(1))] = literal
        return sorted(found.items())


def _uid_next(client: imaplib.IMAP4) -> int | None:
    """The UIDNEXT the last SELECT or EXAMINE answered; None when the server sent none."""
    _, values = client.response("UIDNEXT")
    if not values or values[0] is None:
        return None
    try:
        return int(_text_of(values))
    except ValueError:
        return None


def _imap_date(day: date) -> str:
    # RFC 3501 date: English month abbreviations whatever the process locale.
    return f"{day.day}-{_IMAP_MONTHS[day.month - 1]}-{day.year}"


def _text_of(data: Sequence[object]) -> str:
    first = data[0] if data else b""
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first or "")
