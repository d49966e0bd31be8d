"""`campaign-pipeline mailbox …` and `campaign pause|resume`: the operator's hand on sending."""

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from cli.context import connect, err, fail, load_yaml, out
from core.campaigns.sending_rules import describe_errors
from core.mailboxes.check import (
    DEFAULT_CHECK_TIMEOUT,
    CheckResult,
    Protocol,
    check_login,
)
from core.mailboxes.health import percent
from core.mailboxes.mailbox_file import ImapSpec, MailboxFileError, SmtpSpec, parse_mailbox_file
from core.statuses import CampaignStatus, MailboxStatus
from db.base import utcnow
from db.engine import unit_of_work
from db.queries.mailboxes import (
    MailboxRef,
    MailboxRow,
    StoredLogins,
    UnknownWorkspaceError,
    add_mailboxes,
    find_mailboxes,
    list_mailboxes,
    pause_campaign,
    pause_mailbox,
    read_mailbox_logins,
    resume_campaign,
    resume_mailbox,
)
from tasks.mailbox_passwords import resolve_password

mailbox_app = typer.Typer(
    no_args_is_help=True,
    help="Sending mailboxes: add from a file, list, check, pause, resume.",
)

Workspace = Annotated[
    str | None,
    typer.Option("--workspace", help="Workspace id, when the address is a mailbox in several."),
]


@mailbox_app.command("add")
def mailbox_add(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False)],
) -> None:
    """Create or update a workspace's mailboxes from a YAML (or JSON) file, all or nothing."""
    try:
        document = parse_mailbox_file(load_yaml(file), source=str(file))
    except MailboxFileError as exc:
        raise fail(f"{exc}\nnothing was written") from None
    database = connect()
    try:
        with unit_of_work(database.sessions) as session:
            added = add_mailboxes(session, document, now=utcnow())
    except UnknownWorkspaceError as exc:
        raise fail(f"{exc}; nothing was written") from None
    out.print(
        f"workspace {document.workspaceId}: created {len(added.created)}, "
        f"updated {len(added.updated)} mailbox(es)"
    )
    for email in added.created:
        out.print(f"  created {email}")
    for email in added.updated:
        out.print(f"  updated {email}")


@mailbox_app.command("list")
def mailbox_list(workspace: Workspace = None) -> None:
    """Each mailbox: status and why, today's cap, last 7 days' hard-bounce and complaint rates."""
    database = connect()
    now = utcnow()
    with unit_of_work(database.sessions) as session:
        rows = list_mailboxes(session, now=now, workspace_id=workspace)
    if not rows:
        out.print("no mailboxes" + (f" in workspace {workspace}" if workspace else ""))
    for row in rows:
        out.print(_line(row, now))


def _line(row: MailboxRow, now: datetime) -> str:
    health = row.health
    line = (
        f"{row.email} (workspace {row.workspace_id}): {row.status.value}, "
        f"cap today {row.warmup.cap(now)} of {row.warmup.daily_limit}; last 7 days: "
        f"{health.sends} sent, hard bounces {health.hard_bounces} "
        f"({percent(health.hard_bounce_rate)}), complaints {health.complaints} "
        f"({percent(health.complaint_rate)})"
    )
    if row.status is not MailboxStatus.active and row.status_changed_at is not None:
        since = row.status_changed_at.strftime("%Y-%m-%d %H:%M UTC")
        line += f"; {row.status.value} since {since}: {row.status_reason or 'no reason given'}"
    if not row.has_imap:
        line += "; no IMAP (replies to it are not read)"
    return line


def _one(email: str, workspace: str | None, matches: list[MailboxRef]) -> MailboxRef:
    """The one mailbox meant, or a clear error: none, or one in several workspaces."""
    if not matches:
        where = f" in workspace {workspace}" if workspace else ""
        raise fail(f"no mailbox {email}{where}; `mailbox list` shows them")
    if len(matches) > 1:
        workspaces = ", ".join(match.workspace_id for match in matches)
        raise fail(
            f"{email} is a mailbox of {len(matches)} workspaces ({workspaces}); "
            "say which with --workspace"
        )
    return matches[0]


@mailbox_app.command("pause")
def mailbox_pause(
    email: Annotated[str, typer.Argument(help="The mailbox's address.")],
    why: Annotated[str, typer.Option("--why", help="The reason, shown by `mailbox list`.")],
    workspace: Workspace = None,
) -> None:
    """Pause a mailbox: delivery defers its sends, with the reason `mailbox list` shows."""
    if not why.strip():
        raise fail("--why needs a reason; `mailbox list` shows it to whoever resumes")
    database = connect()
    with unit_of_work(database.sessions) as session:
        mailbox = _one(email, workspace, find_mailboxes(session, email, workspace_id=workspace))
        before = pause_mailbox(session, mailbox.id, reason=why.strip(), now=utcnow())
    was = "" if before is MailboxStatus.active else f" (it was {before})"
    out.print(f"paused {mailbox.email} (workspace {mailbox.workspace_id}){was}: {why.strip()}")
    # Said on every pause: what happens to its leads is not obvious from the word "paused".
    err.print(
        "note: its due sends wait (deferred, never failed) until `mailbox resume`; leads it has"
        " not written to yet move to their campaign's other active mailboxes"
    )


@mailbox_app.command("resume")
def mailbox_resume(
    email: Annotated[str, typer.Argument(help="The mailbox's address.")],
    workspace: Workspace = None,
) -> None:
    """Make a paused or disconnected mailbox active again."""
    database = connect()
    with unit_of_work(database.sessions) as session:
        mailbox = _one(email, workspace, find_mailboxes(session, email, workspace_id=workspace))
        before = resume_mailbox(session, mailbox.id, now=utcnow())
    if before is MailboxStatus.active:
        out.print(f"{mailbox.email} (workspace {mailbox.workspace_id}) is already active")
    else:
        out.print(f"resumed {mailbox.email} (workspace {mailbox.workspace_id}), was {before}")
        err.print("note: its waiting sends go out when their deferral ends (within an hour)")


@mailbox_app.command("check")
def mailbox_check(
    email: Annotated[str | None, typer.Argument(help="One mailbox; all by default.")] = None,
    workspace: Workspace = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds per server.")] = (
        DEFAULT_CHECK_TIMEOUT
    ),
) -> None:
    """Log in to each mailbox's SMTP (EHLO, STARTTLS, AUTH, NOOP) and IMAP (LOGIN, SELECT)."""
    database = connect()
    with unit_of_work(database.sessions) as session:
        mailboxes = read_mailbox_logins(session, email=email, workspace_id=workspace)
    if not mailboxes:
        where = f" in workspace {workspace}" if workspace else ""
        raise fail(f"no mailbox {email}{where}" if email else f"no mailboxes{where}")
    failed = 0
    for mailbox in mailboxes:
        out.print(f"{mailbox.email} (workspace {mailbox.workspace_id}, {mailbox.status}):")
        for result in _check(mailbox, timeout):
            failed += not result.ok
            out.print(f"  {result.line()}")
    if failed:
        raise fail(f"{failed} check(s) failed")


def _check(mailbox: StoredLogins, timeout: float) -> list[CheckResult]:
    """Each configured server's verdict; stored settings the file would refuse are one too."""
    results = []
    servers: list[tuple[Protocol, type[SmtpSpec] | type[ImapSpec], dict[str, object] | None]] = [
        (Protocol.smtp, SmtpSpec, mailbox.smtp),
        (Protocol.imap, ImapSpec, mailbox.imap),
    ]
    for protocol, spec_type, stored in servers:
        if stored is None:
            continue  # no IMAP for this mailbox
        try:
            spec = spec_type.model_validate(stored)
        except ValidationError as exc:
            results.append(_unusable(protocol, exc))
            continue
        results.append(check_login(spec, resolve_password, timeout=timeout))
    return results


def _unusable(protocol: Protocol, exc: ValidationError) -> CheckResult:
    problems = "; ".join(describe_errors(exc))
    return CheckResult(
        protocol=protocol, server="(stored settings)", ok=False, answer=f"not usable: {problems}"
    )


def campaign_pause(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    why: Annotated[
        str | None, typer.Option("--why", help="The reason, kept in Campaign.statusReason.")
    ] = None,
) -> None:
    """Pause an active campaign: no generation, and its scheduled sends wait until resumed."""
    database = connect()
    reason = why.strip() if why and why.strip() else None
    with unit_of_work(database.sessions) as session:
        before = pause_campaign(session, campaign_id, reason=reason, now=utcnow())
    _say_moved(campaign_id, before, CampaignStatus.active, CampaignStatus.paused, "paused")


def campaign_resume(campaign_id: Annotated[str, typer.Argument(help="Campaign id.")]) -> None:
    """Make a paused campaign active again, its circuit breaker counting afresh from now; its
    waiting sends go out in their next window."""
    database = connect()
    with unit_of_work(database.sessions) as session:
        before = resume_campaign(session, campaign_id, now=utcnow())
    _say_moved(campaign_id, before, CampaignStatus.paused, CampaignStatus.active, "resumed")


def _say_moved(
    campaign_id: str,
    before: CampaignStatus | None,
    source: CampaignStatus,
    target: CampaignStatus,
    verb: str,
) -> None:
    if before is None:
        raise fail(f"no campaign with id {campaign_id!r}")
    if before is target:
        out.print(f"campaign {campaign_id} is already {target}")
    elif before is not source:
        raise fail(f"campaign {campaign_id} is {before}; only a {source} campaign can be {verb}")
    else:
        out.print(f"{verb} campaign {campaign_id}")
