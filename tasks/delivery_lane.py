"""A delivery lane's I/O: one sending mailbox's sends, on one connection and one transport.

Per send, `sending` is committed before the transport is called; the result is committed with
the next group's handover, in the same single statement (one round trip and one commit per
group), or at once when the lane must wait. A lane without gaps first reserves its sends' room
in their campaigns' daily caps, so its handovers lock only its mailbox's counter. What to do at
each step is decided in core.delivery.lane; this module only orders the reads, writes and
transport calls.
"""

import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.delivery.accounts import MailboxStates, mailbox_key
from core.delivery.config import DeliveryConfig
from core.delivery.headers import MessageError
from core.delivery.lane import (
    LaneSend,
    SendUpdate,
    handover_due,
    handover_guard,
    next_group,
    outgoing_message,
    plan_updates,
    released,
    replan_refused,
    unbuildable,
    verdict_update,
)
from core.delivery.plan import (
    Decision,
    DueSend,
    Usage,
    local_day_start,
    plan_deliveries,
    usage_days,
)
from core.delivery.report import DeliveryColumn, DeliveryReport, UnknownSend
from core.delivery.transport import DeliveryVerdict, Transport, TransportPool, open_transport
from core.failpoints import failpoint
from core.mailboxes.secrets import masked
from core.statuses import CampaignLeadStatus, EmailSendStatus, EngagementType
from db.base import utcnow
from db.engine import DatabaseConfig, sessions_for
from db.queries import delivery as queries
from db.queries.breakers import BreakerScope, Trip, trip_breakers
from db.queries.delivery import CampaignRoom, ResultRow
from db.queries.sending_mailboxes import disconnect_mailbox
from db.queries.stops import SendStop, stop_send_recipient
from tasks.database import run_in_transaction
from tasks.sending_accounts import current_mailbox_states

# Past this much waiting a lane commits the previous send's result instead of holding it.
COMMIT_BEFORE_WAIT = 0.05

# When the database goes away mid-lane, the lane tries this long (seconds between attempts) to
# write what it knows before giving up: about half a minute, a restart or a failover.
SALVAGE_DELAYS = (0.5, 1, 2, 4, 8, 15)
NOT_TRANSMITTED = "handover interrupted before the transport was called (database connection lost)"


def usage(session: Session, sends: list[DueSend], now: datetime) -> Usage:
    """Today's counts for a plan of `sends`, creating the day's counter rows the guard needs."""
    days = usage_days(sends, now)
    return queries.usage_today(session, campaigns=days.campaigns, mailboxes=days.mailboxes)


def plan_batch(
    session: Session,
    sends: list[DueSend],
    *,
    now: datetime,
    deadline: datetime,
    mailboxes: MailboxStates | None = None,
) -> list[Decision]:
    """Every send's decision, against today's counts and the mailboxes' statuses and caps."""
    today = usage(session, sends, now)
    return plan_deliveries(
        sends, today, now=now, deadline=deadline, rng=random.Random(), mailboxes=mailboxes
    )


def settle(
    session: Session | Connection,
    token: str,
    now: datetime,
    updates: list[SendUpdate],
    report: DeliveryReport,
    sends: dict[str, DueSend],
) -> None:
    """Write what the plan decided for sends that do not go now, and count what was written."""
    written = queries.settle(session, token=token, now=now, updates=updates)
    for update in updates:
        if update.send_id in written:
            campaign_id = sends[update.send_id].campaignId
            report.count(campaign_id, update.mailbox, update.column, update.report_reason)


def _row(update: SendUpdate, *, untried: bool = False) -> ResultRow:
    """A handover's result as the row update the database takes."""
    return ResultRow(update.send_id, update.status, update.reason, update.at, untried)


@dataclass
class _Pending:
    """A result not committed yet, and where it goes in the report."""

    update: SendUpdate
    send: DueSend
    mailbox: str
    untried: bool = False  # handed over, then given back before the transport was called

    @property
    def row(self) -> ResultRow:
        """The result as the row update the database takes."""
        return _row(self.update, untried=self.untried)


class Lane:
    """Deliveries from one mailbox, in slot order, on one connection and one transport."""

    def __init__(
        self,
        *,
        token: str,
        database: DatabaseConfig,
        config: DeliveryConfig,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        mailbox_id: str | None = None,
        mailboxes: MailboxStates | None = None,
        transports: TransportPool | None = None,
    ) -> None:
        self.token = token
        # The run's open transports, when it keeps them from batch to batch; else the lane opens
        # its own and closes it when done.
        self.transports = transports
        # The lane's `Mailbox` row, when it has one: a failed login or an unreachable server
        # disconnects it (the server's answer in `down`) and the lane gives its sends back.
        self.mailbox_id = mailbox_id
        self.mailboxes = mailboxes or {}
        self.down: str | None = None
        # Why the lane stopped handing over, once it has: its mailbox went down, or was paused
        # (its circuit breaker tripped, here or in another lane). Its other sends wait with it.
        self.halt: str | None = None
        self.trips: list[Trip] = []  # breakers this lane tripped; the task announces them
        self.email = ""
        self.unsent: list[DueSend] = []  # refused by the guard after the lane halted
        self.database = database
        self.config = config
        self.secret = config.unsubscribe_secret.get_secret_value()
        # Each lane counts on its own (lanes are threads); the batch merges them at the end.
        self.report = DeliveryReport()
        self.logger = logger
        self.lease = timedelta(seconds=config.lease_seconds)
        self.pending: list[_Pending] = []
        # Sends this lane set `sending` (or may have: a handover whose answer was lost) and has
        # not passed to the transport yet, by id.
        self.untransmitted: dict[str, DueSend] = {}
        # Room the lane holds in its campaigns' caps and has not handed over yet, by (campaign,
        # local day as the guard counts it); only positive counts are kept.
        self.reserved: dict[tuple[str, datetime], int] = {}
        self.rng = random.Random()
        engine = sessions_for(database).kw["bind"]
        assert isinstance(engine, Engine)
        self.engine = engine

    def run(self, lane: list[LaneSend]) -> None:
        """Deliver every send of the lane; one send's failure never stops the others."""
        config = self.config.transport
        transport = self.transports.take(config) if self.transports else open_transport(config)
        ended = False
        queue = deque(lane)
        mailbox = lane[0].decision.mailbox if lane else None
        self.email = mailbox.email if mailbox else ""
        last_handover: datetime | None = None
        try:
            # One connection for the whole lane, in autocommit: each group's handover is one
            # statement that is its own transaction, so a group costs one round trip to the
            # database. Writes that need several statements (a bounce, a refusal) take a session.
            with self._autocommit() as connection:
                if self.mailbox_id is not None:
                    # Logged in before any handover, so a wrong password costs no attempt.
                    answer = transport.open()
                    if answer is not None:
                        self._go_down(answer)
                if self.halt is None:
                    self._reserve(connection, lane)
                while queue and self.halt is None:
                    now = utcnow()
                    wait = (handover_due(queue[0], last_handover, now=now) - now).total_seconds()
                    if wait > COMMIT_BEFORE_WAIT:
                        self._flush(connection)
                        if wait > 1:
                            self.logger.info("lane waits %.1fs for the mailbox gap", wait)
                        time.sleep(wait)
                    group = next_group(queue, size=self.config.handover_group, now=utcnow())
                    if self._deliver_group(connection, transport, group):
                        last_handover = utcnow()
                if self.halt is not None:
                    self._give_back(connection, queue)
                self._flush(connection)
                self._release(connection)
            ended = True
        except DBAPIError:
            self._salvage()
            raise
        finally:
            if ended and self.halt is None and self.transports is not None:
                self.transports.give_back(config, transport)  # logged in, for the next batch
            else:
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
        rows += [
            ResultRow(send_id, EmailSendStatus.scheduled, NOT_TRANSMITTED)
            for send_id in self.untransmitted
        ]
        if not rows and not self.reserved:
            return
        for delay in SALVAGE_DELAYS:
            time.sleep(delay)
            try:
                with self._autocommit() as connection:
                    written = queries.record_results(
                        connection, token=self.token, now=utcnow(), results=rows
                    )
                    self._release(connection)
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

    def _reserve(self, connection: Connection, lane: list[LaneSend]) -> None:
        """Take room in the campaigns' daily caps for the lane's sends, in one statement.

        Otherwise every handover locks its campaign's counter row and holds it through its
        commit, so the lanes of one campaign hand over one at a time, whatever
        SMTP_MAX_CONNECTIONS says. A handover spends this room without that lock (the mailbox's
        row is still locked and counted at each one); the lane gives back what it did not hand
        over when it ends, and a lane that dies keeps it until the day is over, which errs
        towards sending less. Sends paced by a gap go one at a time anyway and reserve nothing;
        a handover past the room, or on another day (the lane crossed midnight), locks and
        counts the campaign's row as before.
        """
        now = utcnow()
        wanted: Counter[tuple[str, datetime]] = Counter()
        limits: dict[str, int] = {}
        for queued in lane:
            rules = queued.rules
            if rules.min_gap_seconds or rules.jitter_seconds:
                continue
            # The day handover_guard counts the campaign's cap in.
            wanted[queued.send.campaignId, local_day_start(now, ZoneInfo(rules.timezone))] += 1
            limits[queued.send.campaignId] = rules.daily_limit
        # One send gains nothing from a reservation and would cost two statements.
        rooms = [CampaignRoom(c, day, n, limits[c]) for (c, day), n in wanted.items() if n > 1]
        granted = queries.reserve_campaign_room(connection, rooms)
        self.reserved = {
            (room.campaign_id, room.day): got
            for room, got in zip(rooms, granted, strict=True)
            if got
        }

    def _release(self, connection: Connection) -> None:
        """Give back the room the lane reserved and did not hand over."""
        unused = [CampaignRoom(c, day, n) for (c, day), n in self.reserved.items()]
        queries.release_campaign_room(connection, unused)
        self.reserved = {}

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A connection of the lane's own in autocommit: each statement its own transaction."""
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def _deliver_group(
        self, connection: Connection, transport: Transport, group: list[LaneSend]
    ) -> bool:
        """Hand a group over in one statement, then deliver each send it let through.

        True when at least one send was handed over (the mailbox gap counts from it).
        """
        first = group[0]
        mailbox = first.decision.mailbox
        assert mailbox is not None
        now = utcnow()
        messages: dict[str, EmailMessage] = {}
        for queued in group:
            send = queued.send
            try:
                messages[send.sendId] = outgoing_message(
                    send,
                    first.rules,
                    mailbox,
                    now=now,
                    secret=self.secret,
                    public_base_url=self.config.public_base_url,
                )
            except MessageError as exc:
                self._flush(connection)
                failed = unbuildable(send.sendId, exc)
                queries.settle(connection, token=self.token, now=now, updates=[failed])
                self.report.count(
                    send.campaignId, mailbox.email, failed.column, failed.report_reason
                )
        sends = [q for q in group if q.send.sendId in messages]
        if not sends:
            return False
        message_ids = {i: str(message["Message-ID"]) for i, message in messages.items()}
        guard = handover_guard(sends, message_ids, now=now)
        # Until the answer arrives, any of the group may be `sending`, and may have spent the
        # lane's reserved room: a lost answer must not give back room a handover used.
        self.untransmitted = {q.send.sendId: q.send for q in sends}
        room_key = (guard.campaign_id, guard.day)
        reserved = self.reserved.pop(room_key, None)
        spent = min(reserved, len(sends)) if reserved is not None else 0
        if reserved is not None and reserved > spent:
            self.reserved[room_key] = reserved - spent
        written, handed = queries.hand_over_group(
            connection,
            guard,
            results=[p.row for p in self.pending],
            token=self.token,
            now=now,
            lease=self.lease,
            campaign_reserved=reserved,
        )
        if spent > len(handed):
            self.reserved[room_key] = self.reserved.get(room_key, 0) + spent - len(handed)
        self._account(written)
        self.untransmitted = {i: s for i, s in self.untransmitted.items() if i in handed}
        for queued in sends:
            send = queued.send
            if send.sendId not in handed:
                continue
            failpoint("delivery.after_handover")
            del self.untransmitted[send.sendId]
            if self.halt is not None:
                # The lane halted earlier in this group: never tried, given back.
                (update,) = released([send], self.halt, mailbox=mailbox.email, now=utcnow())
                self.pending.append(_Pending(update, send, mailbox.email, untried=True))
                continue
            result = transport.deliver(
                messages[send.sendId], sender=mailbox.email, recipient=send.toEmail
            )
            if result.verdict is DeliveryVerdict.accepted:
                failpoint("delivery.after_accept")
            answered = utcnow()
            update = verdict_update(
                send, result, now=answered, max_attempts=self.config.max_attempts, rng=self.rng
            )
            if result.account_down and self.mailbox_id is not None:
                halt = self._go_down(result.detail)
                (update,) = released([send], halt, mailbox=mailbox.email, now=answered)
            if update.column is DeliveryColumn.bounced:
                self._flush(connection)
                self._bounce(send, mailbox.email, result.detail, update, answered)
            else:
                self._hold(send, mailbox.email, update)
        refused = [q for q in sends if q.send.sendId not in handed]
        if refused and self.halt is not None:
            self.unsent += [q.send for q in refused]  # given back with the rest of the lane
        elif refused:
            self._flush(connection)
            # A refusal whose re-plan says the send may go is tried once more, alone.
            retry = [q for q in refused if self._refused(q.send, last_try=q.retried)]
            for queued in retry:
                queued.retried = True
                if self._deliver_group(connection, transport, [queued]):
                    handed.add(queued.send.sendId)
        return bool(handed)

    def _go_down(self, answer: str) -> str:
        """The mailbox's login or server failed with `answer`: the lane halts, and gives its
        sends back once its mailbox is marked `disconnected`. Returns the sends' reason."""
        self.down = self._masked(answer)
        self.halt = f"mailbox disconnected: {self.down}"
        return self.halt

    def _masked(self, answer: str) -> str:
        """The server's answer, with the lane's password masked should the server echo it."""
        password = self.config.transport.password
        return masked(answer, password.get_secret_value() if password else None)

    def _give_back(self, connection: Connection, queue: deque[LaneSend]) -> None:
        """Give back the sends the lane had not handed over: `scheduled` again with why it
        halted, never failed, never attempted. A mailbox that went down is first marked
        `disconnected` with the server's answer."""
        assert self.halt is not None
        halt, now = self.halt, utcnow()
        if self.down is not None:
            assert self.mailbox_id is not None
            mailbox_id, answer = self.mailbox_id, self.down
            # Lanes that share a mailbox each find it down; the first one marks it.
            run_in_transaction(
                self.database,
                lambda session: disconnect_mailbox(session, mailbox_id, reason=answer, now=now),
            )
        self._flush(connection)
        waiting = {send.sendId: send for send in self.unsent + [q.send for q in queue]}
        email = self.email
        updates = released(list(waiting.values()), halt, mailbox=email, now=now)
        queue.clear()
        self.unsent = []
        settle(connection, self.token, now, updates, self.report, waiting)
        self.logger.warning(
            "lane of %s halted, %s; %d sends of this run wait", email, halt, len(updates)
        )

    def _hold(self, send: DueSend, mailbox: str, update: SendUpdate) -> None:
        """Keep a result for the next handover's statement; an unknown one is listed now."""
        self.pending.append(_Pending(update, send, mailbox))
        if update.status is EmailSendStatus.unknown:
            reason = update.reason or ""
            self.report.unknown.append(
                UnknownSend(
                    send_id=send.sendId, campaign_id=send.campaignId, mailbox=mailbox, reason=reason
                )
            )
            self.logger.warning("send %s outcome unknown: %s", send.sendId, reason)

    def _bounce(
        self, send: DueSend, mailbox: str, detail: str, update: SendUpdate, now: datetime
    ) -> None:
        """Fail the send, record its bounce and stop its address, in one transaction, and weigh
        its mailbox and campaign against their circuit breakers' lines in the same one, so a
        pause commits with the bounce that caused it."""
        assert update.reason is not None
        stop = SendStop(
            send_id=send.sendId,
            workspace_id=send.workspaceId,
            email=send.toEmail,
            event=EngagementType.bounce,
            status=CampaignLeadStatus.bounced,
            reason=update.reason,
            metadata={"source": "smtp", "reply": detail},
        )

        def bounce(session: Session) -> list[Trip]:
            written = queries.record_results(
                session, token=self.token, now=now, results=[_row(update)]
            )
            if not written:
                return []
            stop_send_recipient(session, stop, now=now)
            return trip_breakers(
                session,
                now=now,
                mailbox_lines=self.config.breaker_lines,
                mailbox_ids=[self.mailbox_id] if self.mailbox_id else [],
                campaign_ids=[send.campaignId],
            )

        trips = run_in_transaction(self.database, bounce)
        self.report.count(send.campaignId, mailbox, update.column, update.report_reason)
        self.trips += trips
        for trip in trips:
            if trip.scope is BreakerScope.mailbox and trip.id == self.mailbox_id:
                # Nothing more from it; a paused campaign's sends are refused at their handover.
                self.halt = f"mailbox paused: {trip.reason}"

    def _refused(self, send: DueSend, *, last_try: bool) -> bool:
        """The guard said no: find out why and write it (cancel, or defer to the next moment).

        True when the send may go after all and the handover should be tried again. A lane
        whose mailbox was paused or disconnected meanwhile halts: the send is given back with
        the rest of the lane, with that reason.
        """
        if self.halt is not None:
            self.unsent.append(send)
            return False
        now = utcnow()

        def replan(session: Session) -> bool:
            fresh = queries.reload_send(session, send_id=send.sendId, token=self.token)
            if fresh is None:
                self.report.count(
                    send.campaignId,
                    None,
                    DeliveryColumn.cancelled,
                    "stopped or changed before handover",
                )
                return False
            # The statuses as they are now, not as the run found them: a breaker (in another
            # lane or run) or an operator may have paused a mailbox since, hence the refusal.
            states = current_mailbox_states(session, [fresh], now, self.mailboxes)
            own = states.get(mailbox_key(fresh.workspaceId, self.email))
            if own is not None and not own.usable:
                self.halt = own.hold_reason
            today = usage(session, [fresh], now)
            decision = replan_refused(
                fresh, today, last_try=last_try, now=now, rng=self.rng, mailboxes=states
            )
            if decision is None:
                return True
            updates = plan_updates([decision])
            settle(session, self.token, now, updates, self.report, {send.sendId: fresh})
            return False

        again = run_in_transaction(self.database, replan)
        if again and self.halt is not None:
            self.unsent.append(send)  # it may go, but from another mailbox: in a later run
            return False
        return again

    def _account(self, written: set[str]) -> None:
        """Count the pending results the database took; the others' claim was taken over."""
        for pending in self.pending:
            if pending.send.sendId in written:
                self.report.count(
                    pending.send.campaignId,
                    pending.mailbox,
                    pending.update.column,
                    pending.update.report_reason,
                )
            else:
                self.logger.warning(
                    "send %s: result %s not written, the claim was taken over",
                    pending.send.sendId,
                    pending.update.status,
                )
        self.pending = []

    def _flush(self, connection: Connection) -> None:
        """Write the held results now, in their own statement."""
        if self.pending:
            results = [p.row for p in self.pending]
            self._account(
                queries.record_results(connection, token=self.token, now=utcnow(), results=results)
            )
