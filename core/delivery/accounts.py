"""Sending mailboxes that have a `Mailbox` row: their status, today's cap, and what a lane
does when the mailbox's login or server fails (the mailbox is down, its sends wait).

A mailbox of the sendingRules with no row is not here: it sends through the global SMTP login
with the sendingRules' cap, as before `Mailbox` rows existed.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from core.statuses import MailboxStatus

# How long the sends of a paused or disconnected mailbox wait before they are looked at again.
MAILBOX_RECHECK = timedelta(hours=1)


@dataclass(frozen=True)
class MailboxState:
    """A sending mailbox with a row: its status and reason, and today's warm-up cap."""

    status: MailboxStatus
    reason: str | None
    cap: int
    # Why its new mail could not be read before this batch: a reply may be waiting there, so
    # its follow-ups wait too (first emails still go: nobody can have answered those).
    unread: str | None = None

    @property
    def usable(self) -> bool:
        """Whether sends may go out from this mailbox now."""
        return self.status is MailboxStatus.active

    @property
    def hold_reason(self) -> str:
        """Why its sends wait: `mailbox disconnected: 535 5.7.8 ...`."""
        return f"mailbox {self.status}" + (f": {self.reason}" if self.reason else "")

    @property
    def unread_reason(self) -> str:
        """Why a follow-up from it waits: `inbox not read for replies: imap.host=...`."""
        return f"inbox not read for replies: {self.unread}"


# By (workspace id, lowercased address): a row belongs to one workspace.
MailboxStates = Mapping[tuple[str, str], MailboxState]


def mailbox_key(workspace_id: str, email: str) -> tuple[str, str]:
    """The key of a mailbox in MailboxStates."""
    return workspace_id, email.lower()
