"""Settling an `unknown` send from its mailbox's Sent folder (RELIABILITY.md property 17).

A send is `unknown` when its handover began and the run never learned how it ended. Google and
Microsoft file what their SMTP server accepted in the mailbox's Sent folder, so its Message-ID
there means the message left; its absence long after the handover means the handover never
completed, and the send may go again under the same Message-ID.
"""

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from core.settings import Settings
from core.statuses import EmailSendStatus


class ReconcileConfig(BaseModel):
    """How a run reconciles: the grace period, how many sends at most, the IMAP timeout."""

    model_config = ConfigDict(frozen=True)

    grace_seconds: int = Field(default=900, ge=0)
    max_sends: int = Field(default=1000, ge=1)
    imap_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=4, ge=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ReconcileConfig":
        """The grace period from RECONCILE_GRACE_SECONDS; mailboxes read as many at once as
        delivery opens SMTP connections."""
        return cls(
            grace_seconds=settings.reconcile_grace_seconds,
            max_connections=settings.smtp_max_connections,
        )


class Outcome(StrEnum):
    """What reconciling did to one send."""

    sent = "sent"  # found in the Sent folder
    rescheduled = "rescheduled"  # absent past the grace period: scheduled again
    waiting = "waiting"  # absent, but the server may still be filing it: left unknown
    unproven = "unproven"  # absent, and so is an earlier send that left: the folder proves nothing
    unsearchable = "unsearchable"  # no mailbox row or IMAP, or the mailbox could not be read
    taken = "taken"  # another run settled it first, or it moved on meanwhile


class UnknownHandover(BaseModel):
    """An `unknown` send as reconciling reads it; the token and handover time fence the write."""

    model_config = ConfigDict(frozen=True)

    send_id: str
    campaign_id: str
    mailbox: str
    message_id: str
    attempted_at: datetime
    claim_token: str | None
    # The Message-ID of this mailbox's latest send accepted before this handover, if any.
    witness: str | None = None


class Reconciliation(BaseModel):
    """The verdict on one send: its new status, why, and when it left (when it did)."""

    model_config = ConfigDict(frozen=True)

    send: UnknownHandover
    outcome: Outcome
    status: EmailSendStatus
    reason: str
    sent_at: datetime | None = None


def reconcile(
    send: UnknownHandover,
    found_at: datetime | None,
    *,
    witness_filed: bool | None,
    folder: str,
    now: datetime,
    grace: timedelta,
) -> Reconciliation:
    """Found means `sent` at found_at; absent for longer than grace means `scheduled` again.

    `witness_filed`: whether the folder holds the send's witness (None: it has none). Absence
    proves nothing in a folder that lacks an earlier message the server accepted: that server
    may not file what it sends, so the send stays `unknown` rather than risk going twice.
    """
    if found_at is not None:
        return Reconciliation(
            send=send,
            outcome=Outcome.sent,
            status=EmailSendStatus.sent,
            reason=f"reconciled: its Message-ID is in the Sent folder {folder!r}",
            sent_at=found_at,
        )
    if witness_filed is False:
        return Reconciliation(
            send=send,
            outcome=Outcome.unproven,
            status=EmailSendStatus.unknown,
            reason=(
                f"not in the Sent folder {folder!r}, and neither is {send.witness}, which this"
                " mailbox sent earlier: its server may not file what it sends; check by hand"
            ),
        )
    waited = now - send.attempted_at
    if waited >= grace:
        return Reconciliation(
            send=send,
            outcome=Outcome.rescheduled,
            status=EmailSendStatus.scheduled,
            reason=(
                f"reconciled: not in the Sent folder {folder!r} {int(waited.total_seconds())} s"
                " after the handover, so it never left; scheduled again with the same Message-ID"
            ),
        )
    return Reconciliation(
        send=send,
        outcome=Outcome.waiting,
        status=EmailSendStatus.unknown,
        reason=(
            f"not in the Sent folder {folder!r} yet; checked again after"
            f" {int(grace.total_seconds())} s from the handover"
        ),
    )


class ReconciledSend(BaseModel):
    """One line of the run's reconcile table: what became of an `unknown` send, and why."""

    send_id: str
    campaign_id: str
    mailbox: str
    outcome: Outcome
    reason: str


def unsearchable_reason(
    *, mailbox: str | None, has_row: bool, has_imap: bool, complete: bool
) -> str | None:
    """Why a send cannot be looked up in a Sent folder (left `unknown`), or None when it can.

    `complete`: the send records its Message-ID and handover time, as every handover writes.
    """
    if mailbox is None:
        return "no sending mailbox recorded: check by hand"
    if not has_row:
        return "no Mailbox row for this address: check its Sent folder by hand"
    if not has_imap:
        return "the Mailbox has no IMAP login: check its Sent folder by hand"
    if not complete:
        return "no Message-ID or handover time recorded: check by hand"
    return None
