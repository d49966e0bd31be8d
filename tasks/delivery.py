"""Prefect tasks of `send-scheduled-emails`: rescue, check rules, claim due sends, deliver.

A batch is planned in one go (core.delivery.plan), then delivered in lanes, one per sending
mailbox, each lane on its own database connection and its own reused transport connection.
Per send, `sending` is committed before the transport is called; the result is committed with
the next send's `sending`, in the same single statement (one round trip and one commit per
send), or at once when the lane must wait.
"""

import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import anyio
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.campaigns.sending_rules import Mailbox, SendingRules, parse_sending_rules
from core.delivery.message import (
    MessageError,
    OutgoingEmail,
    build_message,
    message_id_for,
    thread_subject,
)
from core.delivery.plan import (
    Action,
    Decision,
    DueSend,
    delivery_rules_problem,
    local_day_start,
    plan_deliveries,
    retry_at,
)
from core.delivery.report import DeliveryReport, UnknownSend
from core.delivery.transport import (
    DeliveryResult,
    Outcome,
    Transport,
    TransportConfig,
    open_transport,
)
from core.delivery.unsubscribe import load_secret, sign_token, unsubscribe_mailto, unsubscribe_url
from core.failpoints import failpoint
from core.settings import PROJECT_ROOT, get_settings
from core.statuses import CampaignLeadStatus, EngagementType
from db.base import utcnow
from db.engine import unit_of_work
from db.queries import delivery as queries
from db.queries.delivery import HandOver, ResultRow
from db.queries.stops import record_event, stop_address
from tasks.database import session_factory

# Past this much waiting a lane commits the previous send's result instead of holding it.
COMMIT_BEFORE_WAIT = 0.05

# When the database goes away mid-lane, the lane tries this long (seconds between attempts) to
# write what it knows before giving up: about half a minute, a restart or a failover.
SALVAGE_DELAYS = (0.5, 1, 2, 4, 8, 15)
NOT_TRANSMITTED = "handover interrupted before the transport was called (database connection lost)"


class DeliveryConfig(BaseModel):
    """A run's delivery knobs, without secrets (the transport reads its password itself)."""

    public_base_url: str
    max_connections: int = 4
    max_attempts: int = 5
    handover_group: int = 10
    lease_seconds: int = 600


class SendClaim(BaseModel):
    """A batch of due sends; token is None for a dry-run preview, which holds nothing."""

    token: str | None
    sends: list[DueSend]


class PlannedSend(BaseModel):
    """A dry run's line: what would happen to one send."""

    send_id: str
    campaign_id: str
    mailbox: str
    action: str
    at: str
    reason: str


def delivery_config() -> DeliveryConfig:
    """The run's delivery settings."""
    settings = get_settings()
    return DeliveryConfig(
        public_base_url=settings.public_base_url,
        max_connections=settings.smtp_max_connections,
        max_attempts=settings.max_delivery_attempts,
        handover_group=settings.delivery_handover_group,
        lease_seconds=settings.claim_lease_seconds,
    )


@task(name="rescue-abandoned-sends", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
async def rescue_abandoned_sends() -> list[UnknownSend]:
    """Handovers whose worker vanished become `unknown`, listed for the operator."""

    def rescue() -> list[dict[str, object]]:
        with unit_of_work(session_factory()) as session:
            return queries.rescue_abandoned_sends(session, now=utcnow())

    rows = await anyio.to_thread.run_sync(rescue)
    unknown = [
        UnknownSend(
            send_id=str(row["sendId"]),
            campaign_id=str(row["campaignId"]),
            mailbox=row["mailbox"] and str(row["mailbox"]),
            reason=str(row["statusReason"]),
        )
        for row in rows
    ]
    for send in unknown:
        get_run_logger().warning("send %s outcome unknown: %s", send.send_id, send.reason)
    return unknown


@task(name="check-sending-rules", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
async def check_sending_rules(
    *, cutoff: datetime, campaign_id: str | None, dry_run: bool
) -> dict[str, tuple[str, int]]:
    """Campaigns whose sendingRules cannot be used, with why and how many due sends wait.

    Their sends keep their status and get the reason written on them; other campaigns carry on.
    """

    def check() -> dict[str, tuple[str, int]]:
        blocked: dict[str, tuple[str, int]] = {}
        with unit_of_work(session_factory()) as session:
            for campaign, raw in queries.campaign_rules(session, campaign_id).items():
                problem = delivery_rules_problem(raw)
                if problem is None:
                    continue
                waiting = 0
                if not dry_run:
                    waiting = queries.mark_blocked(
                        session, campaign_id=campaign, reason=problem, cutoff=cutoff
                    )
                blocked[campaign] = (problem, waiting)
        return blocked

    blocked = await anyio.to_thread.run_sync(check)
    for campaign, (problem, waiting) in blocked.items():
        if waiting:
            get_run_logger().warning(
                "campaign %s: %d due sends paused: %s", campaign, waiting, problem
            )
    return blocked


@task(name="claim-due-sends", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
async def claim_due_sends(
    *,
    cutoff: datetime,
    limit: int,
    worker: str,
    lease_seconds: int,
    campaign_id: str | None,
    blocked: list[str],
    dry_run: bool,
) -> SendClaim:
    """Claim (or, in a dry run, only preview) the next batch of due sends."""

    def claim() -> SendClaim:
        with unit_of_work(session_factory()) as session:
            if dry_run:
                sends = queries.preview_due_sends(
                    session,
                    cutoff=cutoff,
                    now=utcnow(),
                    limit=limit,
                    campaign_id=campaign_id,
                    blocked=blocked,
                )
                return SendClaim(token=None, sends=sends)
            token, sends = queries.claim_due_sends(
                session,
                cutoff=cutoff,
                now=utcnow(),
                limit=limit,
                worker=worker,
                lease=timedelta(seconds=lease_seconds),
                campaign_id=campaign_id,
                blocked=blocked,
            )
            return SendClaim(token=token, sends=sends)

    claimed = await anyio.to_thread.run_sync(claim)
    failpoint("delivery.after_claim")
    return claimed


def _usage(session: Session, sends: list[DueSend], now: datetime) -> queries.Usage:
    campaigns: dict[str, datetime] = {}
    mailboxes: dict[str, datetime] = {}
    for send in {send.campaignId: send for send in sends}.values():
        rules = parse_sending_rules(send.sendingRules)
        day = local_day_start(now, ZoneInfo(rules.timezone))
        campaigns[send.campaignId] = day
        for mailbox in rules.sending_mailboxes():
            mailboxes.setdefault(mailbox.email.lower(), day)
    return queries.usage_today(session, campaigns=campaigns, mailboxes=mailboxes)


def _plan(
    session: Session, sends: list[DueSend], *, now: datetime, deadline: datetime
) -> list[Decision]:
    one_per_campaign = {s.campaignId: s for s in sends}.values()
    usable = [s for s in one_per_campaign if delivery_rules_problem(s.sendingRules) is None]
    return plan_deliveries(
        sends, _usage(session, usable, now), now=now, deadline=deadline, rng=random.Random()
    )


@task(name="preview-deliveries", cache_policy=NO_CACHE)
async def preview_deliveries(claim: SendClaim, *, deadline: datetime) -> list[PlannedSend]:
    """A dry run's plan: which sends would leave when, and why the others would wait."""

    def preview() -> list[PlannedSend]:
        with session_factory()() as session:
            decisions = _plan(session, claim.sends, now=utcnow(), deadline=deadline)
        campaign_of = {s.sendId: s.campaignId for s in claim.sends}
        return [
            PlannedSend(
                send_id=d.send_id,
                campaign_id=campaign_of[d.send_id],
                mailbox=d.mailbox.email if d.mailbox else "-",
                action=d.action.value,
                at=d.at.isoformat() if d.at else "",
                reason=d.reason or "",
            )
            for d in decisions
        ]

    return await anyio.to_thread.run_sync(preview)


@dataclass
class _Handover:
    """One send of a lane, with its decision."""

    send: DueSend
    decision: Decision
    rules: SendingRules
    retried: bool = False


@dataclass
class _Pending:
    """A result not committed yet, and where it goes in the report."""

    row: ResultRow
    send: DueSend
    mailbox: str
    column: str
    reason: str | None


class _Lane:
    """Deliveries from one mailbox, in slot order, on one connection and one transport."""

    def __init__(
        self,
        *,
        token: str,
        config: DeliveryConfig,
        secret: bytes,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.token = token
        self.config = config
        self.secret = secret
        # Each lane counts on its own (lanes are threads); the batch merges them at the end.
        self.report = DeliveryReport()
        self.logger = logger
        self.lease = timedelta(seconds=config.lease_seconds)
        self.pending: list[_Pending] = []
        # Sends this lane set `sending` (or may have: a handover whose answer was lost) and has
        # not passed to the transport yet, by id.
        self.untransmitted: dict[str, DueSend] = {}
        self.rng = random.Random()
        self.factory = session_factory()

    def run(self, handovers: list[_Handover]) -> None:
        """Deliver every send of the lane; one send's failure never stops the others."""
        transport = open_transport(TransportConfig.from_settings(get_settings()))
        queue = deque(handovers)
        last_handover: datetime | None = None
        try:
            # One connection for the whole lane, in autocommit: each group's handover is one
            # statement that is its own transaction, so a group costs one round trip to the
            # database. Writes that need several statements (a bounce, a refusal) take a session.
            with self._autocommit() as connection:
                while queue:
                    first = queue[0]
                    gap = timedelta(seconds=first.rules.min_gap_seconds)
                    due = first.decision.at or utcnow()
                    if last_handover is not None:
                        due = max(due, last_handover + gap)
                    wait = (due - datetime.now(UTC)).total_seconds()
                    if wait > COMMIT_BEFORE_WAIT:
                        self._flush(connection)
                        if wait > 1:
                            self.logger.info("lane waits %.1fs for the mailbox gap", wait)
                        time.sleep(wait)
                    if self._deliver_group(connection, transport, self._next_group(queue)):
                        last_handover = utcnow()
                self._flush(connection)
        except DBAPIError:
            self._salvage()
            raise
        finally:
            transport.close()

    def _salvage(self) -> None:
        """A database error stopped the lane (most often the server went away: a restart, a
        failover): write what the lane knows on a new connection.

        That is the results of sends the transport already answered, and the release of sends
        marked `sending` but never transmitted, back to `scheduled` in their slot. Left alone,
        both would become `unknown` at the next run's rescue, and delivered messages would be
        listed as possibly lost. The write is fenced by the claim token, so it repeats
        harmlessly. The lane itself stops: the rest of its claim returns with the lease.
        """
        rows = [p.row for p in self.pending]
        rows += [ResultRow(send_id, "scheduled", NOT_TRANSMITTED) for send_id in self.untransmitted]
        if not rows:
            return
        for delay in SALVAGE_DELAYS:
            time.sleep(delay)
            try:
                with self._autocommit() as connection:
                    written = queries.record_results(
                        connection, token=self.token, now=utcnow(), results=rows
                    )
            except DBAPIError:
                continue
            released = written.intersection(self.untransmitted)
            self._account(written)
            self.untransmitted = {}
            self.logger.warning(
                "lane stopped on a database error; wrote %d results and released %d sends"
                " not transmitted",
                len(written) - len(released),
                len(released),
            )
            return
        self.logger.error(
            "lane stopped on a database error and could not write %d results; those sends"
            " become unknown at the next rescue",
            len(rows),
        )

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A connection of the lane's own in autocommit: each statement its own transaction."""
        with self.factory.kw["bind"].connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def _next_group(self, queue: deque[_Handover]) -> list[_Handover]:
        """The next sends to hand over together: due now, of one campaign, with no gap."""
        group = [queue.popleft()]
        if group[0].rules.min_gap_seconds or group[0].rules.jitter_seconds:
            return group
        now = utcnow()
        while (
            queue
            and len(group) < self.config.handover_group
            and queue[0].send.campaignId == group[0].send.campaignId
            and (queue[0].decision.at is None or queue[0].decision.at <= now)
        ):
            group.append(queue.popleft())
        return group

    def _deliver_group(
        self, connection: Connection, transport: Transport, group: list[_Handover]
    ) -> bool:
        """Hand a group over in one statement, then deliver each send it let through.

        True when at least one send was handed over (the mailbox gap counts from it).
        """
        first = group[0]
        rules, mailbox = first.rules, first.decision.mailbox
        assert mailbox is not None
        now = utcnow()
        messages: dict[str, EmailMessage] = {}
        for handover in group:
            try:
                messages[handover.send.sendId] = self._message(handover.send, rules, mailbox, now)
            except MessageError as exc:
                self._flush(connection)
                rows = [{"id": handover.send.sendId, "status": "failed", "reason": str(exc)}]
                queries.settle(connection, token=self.token, now=now, rows=rows)
                self.report.count(handover.send.campaignId, mailbox.email, "failed", str(exc))
        sends = [h for h in group if h.send.sendId in messages]
        if not sends:
            return False
        guard = HandOver(
            campaign_id=first.send.campaignId,
            mailbox=mailbox.email.lower(),
            sends=tuple((h.send.sendId, str(messages[h.send.sendId]["Message-ID"])) for h in sends),
            day=local_day_start(now, ZoneInfo(rules.timezone)),
            mailbox_limit=mailbox.daily_limit or rules.mailbox_daily_limit,
            campaign_limit=rules.daily_limit,
            min_gap=timedelta(seconds=rules.min_gap_seconds),
        )
        # Until the answer arrives, any of the group may be `sending`.
        self.untransmitted = {h.send.sendId: h.send for h in sends}
        written, handed = queries.hand_over(
            connection,
            guard,
            results=[p.row for p in self.pending],
            token=self.token,
            now=now,
            lease=self.lease,
        )
        self._account(written)
        self.untransmitted = {i: s for i, s in self.untransmitted.items() if i in handed}
        for handover in sends:
            send = handover.send
            if send.sendId not in handed:
                continue
            failpoint("delivery.after_handover")
            del self.untransmitted[send.sendId]
            result = transport.deliver(
                messages[send.sendId], sender=mailbox.email, recipient=send.toEmail
            )
            if result.outcome is Outcome.accepted:
                failpoint("delivery.after_accept")
            self._record(connection, send, mailbox.email, result)
        refused = [h for h in sends if h.send.sendId not in handed]
        if refused:
            self._flush(connection)
            # A refusal whose re-plan says the send may go (the day's counters were missing: a
            # batch that crossed midnight; they exist now) is tried once more, alone.
            retry = [h for h in refused if self._refused(h.send, last_try=h.retried)]
            for handover in retry:
                handover.retried = True
                if self._deliver_group(connection, transport, [handover]):
                    handed.add(handover.send.sendId)
        return bool(handed)

    def _message(
        self, send: DueSend, rules: SendingRules, mailbox: Mailbox, now: datetime
    ) -> EmailMessage:
        assert send.subject is not None and send.body is not None
        token = sign_token(self.secret, send.sendId)
        thread = rules.thread_follow_ups and send.threadMessageId is not None
        subject = send.subject
        if thread and send.threadSubject:
            subject = thread_subject(send.threadSubject)
        name = " ".join(part for part in (send.firstName, send.lastName) if part) or None
        return build_message(
            OutgoingEmail(
                send_id=send.sendId,
                from_email=mailbox.email,
                from_name=mailbox.name or rules.from_name,
                reply_to=rules.reply_to,
                to_email=send.toEmail,
                to_name=name,
                subject=subject,
                text_body=send.body,
                html=rules.html_body,
                date=now,
                message_id=message_id_for(send.sendId, mailbox.email),
                in_reply_to=send.threadMessageId if thread else None,
                references=(send.threadMessageId,) if thread and send.threadMessageId else (),
                unsubscribe_url=unsubscribe_url(self.config.public_base_url, token),
                unsubscribe_mailto=unsubscribe_mailto(mailbox.email, token),
            )
        )

    def _record(
        self, connection: Connection, send: DueSend, mailbox: str, result: DeliveryResult
    ) -> None:
        now = utcnow()
        detail = result.detail
        if result.outcome is Outcome.accepted:
            self._queue(ResultRow(send.sendId, "sent"), send, mailbox, "sent", None)
        elif result.outcome is Outcome.transient:
            if send.attempts + 1 >= self.config.max_attempts:
                reason = f"gave up after {send.attempts + 1} attempts: {detail}"
                self._queue(
                    ResultRow(send.sendId, "failed", reason), send, mailbox, "failed", reason
                )
            else:
                at = retry_at(now, send.attempts + 1, self.rng)
                reason = f"attempt {send.attempts + 1} refused, retrying: {detail}"
                row = ResultRow(send.sendId, "scheduled", reason, at)
                self._queue(row, send, mailbox, "retried", detail)
        elif result.outcome is Outcome.rejected:
            self._queue(ResultRow(send.sendId, "failed", detail), send, mailbox, "failed", detail)
        elif result.outcome is Outcome.ambiguous:
            reason = f"handed over, no final reply: {detail}"
            self._queue(ResultRow(send.sendId, "unknown", reason), send, mailbox, "unknown", reason)
            self.report.unknown.append(
                UnknownSend(
                    send_id=send.sendId, campaign_id=send.campaignId, mailbox=mailbox, reason=reason
                )
            )
            self.logger.warning("send %s outcome unknown: %s", send.sendId, reason)
        else:
            self._flush(connection)
            self._bounce(send, mailbox, detail, now)

    def _bounce(self, send: DueSend, mailbox: str, detail: str, now: datetime) -> None:
        reason = f"bounced: {detail}"
        with unit_of_work(self.factory) as session:
            written = queries.record_results(
                session,
                token=self.token,
                now=now,
                results=[ResultRow(send.sendId, "failed", reason)],
            )
            if written:
                record_event(
                    session,
                    event_id=f"bounce:{send.sendId}",
                    send_id=send.sendId,
                    type=EngagementType.bounce,
                    occurred_at=now,
                    metadata={"source": "smtp", "reply": detail},
                    now=now,
                )
                stop_address(
                    session,
                    workspace_id=send.workspaceId,
                    email=send.toEmail,
                    status=CampaignLeadStatus.bounced,
                    reason=reason,
                    now=now,
                )
        self.report.count(send.campaignId, mailbox, "bounced", detail)

    def _refused(self, send: DueSend, *, last_try: bool) -> bool:
        """The guard said no: find out why and write it (cancel, or defer to the next moment).

        True when the send may go after all and the handover should be tried again.
        """
        now = utcnow()
        with unit_of_work(self.factory) as session:
            fresh = queries.reload_send(session, send_id=send.sendId, token=self.token)
            if fresh is None:
                self.report.count(
                    send.campaignId, None, "cancelled", "stopped or changed before handover"
                )
                return False
            decision = plan_deliveries(
                [fresh], _usage(session, [fresh], now), now=now, deadline=now, rng=self.rng
            )[0]
            if decision.action is Action.deliver:
                if not last_try:
                    return True
                # Plan and guard disagree only when another run used the mailbox meanwhile.
                decision = Decision(
                    send.sendId,
                    Action.defer,
                    "mailbox busy in another run",
                    now + timedelta(seconds=60),
                    decision.mailbox,
                )
            _settle(session, self.token, now, [decision], self.report, {send.sendId: fresh})
        return False

    def _queue(
        self, row: ResultRow, send: DueSend, mailbox: str, column: str, reason: str | None
    ) -> None:
        self.pending.append(_Pending(row, send, mailbox, column, reason))

    def _account(self, written: set[str]) -> None:
        """Count the pending results the database took; the others' claim was taken over."""
        for pending in self.pending:
            if pending.send.sendId in written:
                self.report.count(
                    pending.send.campaignId, pending.mailbox, pending.column, pending.reason
                )
            else:
                self.logger.warning(
                    "send %s: result %s not written, the claim was taken over",
                    pending.send.sendId,
                    pending.row.status,
                )
        self.pending = []

    def _flush(self, connection: Connection) -> None:
        if self.pending:
            results = [p.row for p in self.pending]
            self._account(
                queries.record_results(connection, token=self.token, now=utcnow(), results=results)
            )


def _settle(
    session: Session,
    token: str,
    now: datetime,
    decisions: list[Decision],
    report: DeliveryReport,
    sends: dict[str, DueSend],
) -> None:
    status = {Action.defer: "scheduled", Action.cancel: "cancelled", Action.fail: "failed"}
    column = {Action.defer: "deferred", Action.cancel: "cancelled", Action.fail: "failed"}
    rows = [
        {
            "id": d.send_id,
            "status": status[d.action],
            "reason": d.reason,
            "at": d.at if d.action is Action.defer else None,
            "mailbox": d.mailbox.email.lower() if d.mailbox else None,
        }
        for d in decisions
    ]
    written = queries.settle(session, token=token, now=now, rows=rows)
    for d in decisions:
        if d.send_id in written:
            mailbox = d.mailbox.email.lower() if d.mailbox else None
            report.count(sends[d.send_id].campaignId, mailbox, column[d.action], d.reason)


def split_ungapped(lanes: list[list[_Handover]], connections: int) -> list[list[_Handover]]:
    """Spread a mailbox without gaps over spare connections; a gapped mailbox stays one lane.

    A gap orders a mailbox's sends one after another, but without one nothing does, and the
    round trips of one connection (the commit before each handover, the SMTP dialogue) are
    what limit a lone mailbox.
    """
    spare = max(connections - len(lanes), 0)
    queues: list[list[_Handover]] = []
    for lane in lanes:
        rules = lane[0].rules
        if spare and rules.min_gap_seconds == 0 and rules.jitter_seconds == 0 and len(lane) > 1:
            ways = min(spare + 1, len(lane))
            spare -= ways - 1
            queues.extend(lane[i::ways] for i in range(ways))
        else:
            queues.append(lane)
    return queues


@task(name="deliver-sends", retries=0, cache_policy=NO_CACHE)
async def deliver_sends(
    claim: SendClaim, config: DeliveryConfig, *, deadline: datetime
) -> DeliveryReport:
    """Plan a claimed batch, settle what cannot go now, and deliver the rest, lane by lane.

    Never retried by Prefect: a half-delivered batch must not be handed over again; what it
    left claimed returns to the pool when the lease expires, and `sending` rows become unknown
    (a lane that loses its database connection first writes what it knows: see `_Lane._salvage`).
    """
    assert claim.token is not None
    token = claim.token
    logger = get_run_logger()
    settings = get_settings()
    secret = load_secret(
        settings.unsubscribe_secret.get_secret_value() if settings.unsubscribe_secret else None,
        PROJECT_ROOT / ".data",
    )
    report = DeliveryReport()
    sends = {s.sendId: s for s in claim.sends}

    def deliver() -> None:
        now = utcnow()
        with unit_of_work(session_factory()) as session:
            decisions = _plan(session, claim.sends, now=now, deadline=deadline)
            _settle(
                session,
                token,
                now,
                [d for d in decisions if d.action is not Action.deliver],
                report,
                sends,
            )
        lanes: dict[str, list[_Handover]] = defaultdict(list)
        rules_of: dict[str, SendingRules] = {}
        for decision in decisions:
            if decision.action is Action.deliver and decision.mailbox is not None:
                send = sends[decision.send_id]
                if send.campaignId not in rules_of:
                    rules_of[send.campaignId] = parse_sending_rules(send.sendingRules)
                rules = rules_of[send.campaignId]
                lanes[decision.mailbox.email.lower()].append(_Handover(send, decision, rules))
        queues = split_ungapped(list(lanes.values()), config.max_connections)
        workers = min(config.max_connections, len(queues)) or 1
        lane_workers = [
            _Lane(token=token, config=config, secret=secret, logger=logger) for _ in queues
        ]
        with ThreadPoolExecutor(workers, thread_name_prefix="delivery-lane") as pool:
            futures = [
                pool.submit(lane.run, handovers)
                for lane, handovers in zip(lane_workers, queues, strict=True)
            ]
            for future in futures:
                future.result()
        for lane in lane_workers:
            report.merge(lane.report)

    await anyio.to_thread.run_sync(deliver)
    failpoint("delivery.after_commit")
    logger.info(
        "batch of %d: %d sent, %d retried, %d deferred, %d cancelled, %d failed, %d bounced,"
        " %d unknown",
        len(claim.sends),
        report.total("sent"),
        report.total("retried"),
        report.total("deferred"),
        report.total("cancelled"),
        report.total("failed"),
        report.total("bounced"),
        report.total("unknown"),
    )
    return report
