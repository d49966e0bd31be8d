"""Four worker processes at once over 5,000 due leads, then four delivery processes at once;
and two delivery processes at once over eight sending mailboxes, each with its own login.

Real processes against the session's Prefect API, the fake OpenAI server over HTTP and a
loopback SMTP server: every due lead gets exactly one EmailSend for its step, none is lost or
left claimed, no LLM call is paid twice, and every send reaches the SMTP server exactly once.
The worker processes alone use about 60 s of CPU, so on a 2-core machine the first test takes
one to two minutes; it prints its phases' timings (pytest -s).
"""

import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import func, select, text

from core.mailboxes.mailbox_file import parse_mailbox_file
from db.base import utcnow
from db.models import CampaignLead, EmailSend, GeneratedMessage, Mailbox
from db.queries.mailboxes import add_mailboxes
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.imap_server import LoopbackIMAP
from tests.support.smtp_server import LoopbackSMTP
from tests.support.start_together import GO

pytestmark = [pytest.mark.fault, pytest.mark.flows, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# 20 claims of 250 leads (then of 250 sends) shared by the four runs. Batches of 100 add
# Prefect task runs (about a fifth more worker CPU) without testing anything more.
LEADS, WORKERS, BATCH = 5_000, 4, 250
MODEL = "gpt-4o-mini"
# Well above one run's share of the work: the processes must finish, not hang.
WORKER_TIMEOUT = 300
ALL_DAY = {
    "start": "00:00",
    "end": "23:59:59",
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
}
LIMITS = {"dailyLimit": 10_000, "mailboxDailyLimit": 10_000, "minGapSeconds": 0, "jitterSeconds": 0}
# A three-step campaign with two sticky mailboxes (its leads move on to step 2), and a
# one-step campaign with a single sender (its leads complete).
THREE_STEPS = {
    "timezone": "UTC",
    "window": ALL_DAY,
    "mailboxes": [{"email": "ann@seller.example"}, {"email": "bob@seller.example"}],
    **LIMITS,
}
ONE_STEP = {"timezone": "UTC", "window": ALL_DAY, "fromEmail": "cat@seller.example", **LIMITS}
LEAD_STATE = (
    CampaignLead.campaignId,
    CampaignLead.status,
    CampaignLead.currentStepOrder,
    CampaignLead.claimToken,
    CampaignLead.claimedUntil,
    CampaignLead.attempts,
    CampaignLead.lastError,
)


def address(g: int) -> str:
    return f"lead{g}@buyer{g % 50}.example"


def seed(sessions, as_of) -> tuple[str, str]:
    """LEADS due leads at step 1, alternating between the two campaigns; bulk SQL inserts."""
    with sessions.begin() as session:
        ws = factories.workspace(session)
        three = factories.campaign(
            session, ws, steps=3, name="Three steps", sendingRules=THREE_STEPS
        )
        one = factories.campaign(session, ws, steps=1, name="One step", sendingRules=ONE_STEP)
        # A unique profile per lead (the company carries g), so no two leads share a cache key.
        session.execute(
            text(
                """
                INSERT INTO "Lead" (id, "workspaceId", email, "firstName", "companyName",
                                    "updatedAt")
                SELECT 'mw-lead-' || g, :ws, 'lead' || g || '@buyer' || (g % 50) || '.example',
                       (ARRAY['Ada','Grace','Alan','Edsger','Barbara'])[1 + g % 5],
                       'Company ' || g, now()
                FROM generate_series(1, :n) g
                """
            ),
            {"ws": ws.id, "n": LEADS},
        )
        # Due oldest first, a second apart, the newest a minute before the cutoff.
        session.execute(
            text(
                """
                INSERT INTO "CampaignLead" (id, "campaignId", "leadId", status,
                                            "currentStepOrder", "nextScheduledDate", "updatedAt")
                SELECT 'mw-cl-' || g, CASE WHEN g % 2 = 0 THEN :three ELSE :one END,
                       'mw-lead-' || g, 'active', 1,
                       CAST(:as_of AS timestamp) - (:n - g + 60) * interval '1 second', now()
                FROM generate_series(1, :n) g
                """
            ),
            {"three": three.id, "one": one.id, "n": LEADS, "as_of": as_of.replace(tzinfo=None)},
        )
        session.execute(text('ANALYZE "Lead", "CampaignLead"'))
    return three.id, one.id


def run_workers(
    module: str, args: list[str], env: dict[str, str], logs: Path, *, count: int = WORKERS
) -> list[str]:
    """`count` processes of a worker helper, released together once every one has imported
    its code; waits for all of them and returns their output, each asserted to have exited 0.
    """
    name = module.rsplit(".", 1)[-1]
    gate = logs / f"{name}-gate"
    gate.mkdir(parents=True)
    command = [sys.executable, "-m", "tests.support.start_together", str(gate)]
    workers = []
    for i in range(count):
        # A file, not a pipe: a worker blocked on a full pipe would never finish.
        with open(logs / f"{name}-{i}.log", "w") as out:
            workers.append(
                subprocess.Popen(
                    [*command, str(i), module, *args],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        while len(list(gate.glob("*.ready"))) < count:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                break  # a worker died or hung: reported below
            time.sleep(0.02)
        (gate / GO).touch()
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for worker in workers:
            if worker.poll() is None:  # only our own children, by their pid
                worker.kill()
                worker.wait()
    outputs = [(logs / f"{name}-{i}.log").read_text() for i in range(count)]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"{name} exited {worker.returncode}:\n{output[-3000:]}"
    return outputs


def summary(pattern: str, output: str) -> int:
    """A figure from the run's final log line (e.g. 'claimed 1250, generated ...')."""
    found = re.findall(pattern, output)
    assert found, output[-3000:]
    return int(found[-1])


def test_four_workers_share_5000_leads_then_four_deliverers_send_each_once(
    worker_env, sessions, tmp_path
):
    timings: dict[str, float] = {}
    started = time.perf_counter()
    as_of = utcnow() - timedelta(minutes=1)
    three, one = seed(sessions, as_of)
    timings["seed"] = time.perf_counter() - started
    base_env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
    }

    # Generation: four flow runs in four processes at once, over HTTP to the fake server.
    with FakeOpenAI(latency_ms=0) as llm:
        env = base_env | {"OPENAI_API_KEY": "sk-test-not-real", "OPENAI_BASE_URL": llm.base_url}
        phase = time.perf_counter()
        outputs = run_workers(
            "tests.support.run_flow", [as_of.isoformat(), str(BATCH)], env, tmp_path
        )
        timings["generation"] = time.perf_counter() - phase
        stats = llm.stats()

    claimed = [summary(r"claimed (\d+), generated", output) for output in outputs]
    scheduled = [summary(r"failed \d+, scheduled (\d+)", output) for output in outputs]
    assert sum(claimed) == sum(scheduled) == LEADS, (claimed, scheduled)
    assert sum(1 for n in claimed if n) >= 2, claimed  # the runs really shared the work
    # One LLM call per lead: no lead was generated twice, by two runs or by one.
    assert stats.requests == stats.successes == LEADS

    with sessions() as session:
        per_step = session.execute(
            select(EmailSend.leadId, EmailSend.stepId, func.count()).group_by(
                EmailSend.leadId, EmailSend.stepId
            )
        ).all()
        messages = session.execute(
            select(GeneratedMessage.model, GeneratedMessage.fallbackReason, func.count()).group_by(
                GeneratedMessage.model, GeneratedMessage.fallbackReason
            )
        ).all()
        leads = session.execute(select(*LEAD_STATE, func.count()).group_by(*LEAD_STATE)).all()
        due_first_steps = session.execute(
            text(
                """
                SELECT count(*) FROM "EmailSend" s
                JOIN "SequenceStep" st ON st.id = s."stepId" AND st."stepOrder" = 1
                JOIN "GeneratedMessage" gm ON gm.id = s."generatedMessageId"
                WHERE s.status = 'scheduled' AND s."scheduledFor" <= now() AT TIME ZONE 'UTC'
                """
            )
        ).scalar_one()
    # Every due lead: exactly one send for its step (step 1), none lost, none doubled.
    assert len(per_step) == LEADS and {n for *_, n in per_step} == {1}
    assert due_first_steps == LEADS
    assert messages == [(MODEL, None, LEADS)]  # all from the LLM, none fell back
    # Nobody left claimed or held: the three-step leads wait for step 2, the others completed.
    assert sorted(leads) == sorted(
        [
            (three, "active", 2, None, None, 0, None, LEADS // 2),
            (one, "completed", 2, None, None, 0, None, LEADS - LEADS // 2),
        ]
    )

    # Delivery: four send-scheduled-emails runs in four processes at once, one SMTP server.
    with LoopbackSMTP() as smtp:
        env = base_env | {
            "EMAIL_TRANSPORT": "smtp",
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "none",
            "UNSUBSCRIBE_SECRET": "fault-suite-secret-0123456789",
            "PUBLIC_BASE_URL": "https://links.seller.example",
        }
        phase = time.perf_counter()
        outputs = run_workers("tests.support.run_delivery", [str(BATCH)], env, tmp_path)
        timings["delivery"] = time.perf_counter() - phase
        per_address = {address(g): smtp.deliveries(address(g)) for g in range(1, LEADS + 1)}
        received = smtp.messages

    sent = [summary(r"sent (\d+); retried", output) for output in outputs]
    deferred = [summary(r"; deferred (\d+);", output) for output in outputs]
    # Nothing left for a later run: another run's handovers never defer a mailbox without gap.
    assert sum(sent) == LEADS and deferred == [0] * WORKERS, (sent, deferred)
    assert sum(1 for n in sent if n) >= 2, sent
    # Exactly one message per send at the SMTP server, and every row says so.
    assert set(per_address.values()) == {1}
    assert len(received) == LEADS and not any(m.dropped for m in received)
    with sessions() as session:
        rows = session.execute(
            select(EmailSend.status, EmailSend.claimToken, func.count()).group_by(
                EmailSend.status, EmailSend.claimToken
            )
        ).all()
        message_ids = session.scalars(select(EmailSend.providerMessageId)).all()
    assert rows == [("sent", None, LEADS)]
    assert sorted(m.message["Message-ID"] for m in received) == sorted(message_ids)

    timings["total"] = time.perf_counter() - started
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})


def test_two_deliverers_over_eight_mailboxes_send_each_once_under_its_own_login(
    worker_env, sessions, tmp_path
):
    # Eight mailbox rows, each with its own SMTP login and its own IMAP folder, so both runs
    # also read every inbox before each batch and move the same checkpoints at once.
    boxes = {f"box{i}@seller.example": (f"box{i}", f"box{i}-pw-{i}") for i in range(8)}
    sends, most_per_run = 320, 200
    rules = {"timezone": "UTC", "window": ALL_DAY, **LIMITS}
    rules["mailboxes"] = [{"email": email} for email in boxes]
    with contextlib.ExitStack() as servers:
        smtp = servers.enter_context(LoopbackSMTP(auth=dict(boxes.values())))
        entries, imaps = [], []
        for email, (login, password) in boxes.items():
            imap = servers.enter_context(LoopbackIMAP(auth=(email, password)))
            imaps.append(imap)
            worker_env.setenv(f"{login.upper()}_PASSWORD", password)
            ref = f"env:{login.upper()}_PASSWORD"
            entries.append(
                {
                    "email": email,
                    "smtp": {"host": smtp.host, "port": smtp.port, "security": "none"}
                    | {"username": login, "password": ref},
                    "imap": {"host": imap.host, "port": imap.port, "ssl": False}
                    | {"username": email, "password": ref},
                    "dailyLimit": 100,
                    "warmup": {"start": 100},
                }
            )
        with sessions.begin() as session:
            ws = factories.workspace(session)
            camp = factories.campaign(session, ws, steps=1, sendingRules=rules)
            for g in range(sends):
                lead = factories.lead(session, ws, email=address(g))
                factories.enrolment(session, camp, lead, currentStepOrder=2)
                factories.scheduled_send(
                    session, camp, lead, scheduled_for=utcnow() - timedelta(minutes=1)
                )
            document = parse_mailbox_file({"workspaceId": ws.id, "mailboxes": entries})
            add_mailboxes(session, document, now=utcnow())
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
            "EMAIL_TRANSPORT": "smtp",
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "none",
            "UNSUBSCRIBE_SECRET": "fault-suite-secret-0123456789",
            "PUBLIC_BASE_URL": "https://links.seller.example",
        }
        # Each run claims at most 200 of the 320, so both must deliver, whichever starts first.
        args = ["20", str(most_per_run)]
        outputs = run_workers("tests.support.run_delivery", args, env, tmp_path, count=2)
        received = smtp.messages

    sent = [summary(r"sent (\d+); retried", output) for output in outputs]
    assert sum(sent) == sends and max(sent) <= most_per_run, sent
    assert all(imap.logins >= 2 for imap in imaps)  # each run read every inbox first
    # Each message reached the server once, from its mailbox, under that mailbox's own login.
    assert Counter(m.message["Message-ID"] for m in received).most_common(1)[0][1] == 1
    assert {(m.mail_from, m.auth_login) for m in received} == {
        (email, login) for email, (login, _) in boxes.items()
    }
    assert Counter(r for m in received for r in m.rcpt_tos) == {address(g): 1 for g in range(sends)}
    with sessions() as session:
        rows = session.execute(select(EmailSend.status, EmailSend.attempts, EmailSend.mailbox))
        by_mailbox = Counter((status, attempts, box) for status, attempts, box in rows)
        message_ids = session.scalars(select(EmailSend.providerMessageId)).all()
        checkpoints = session.execute(select(Mailbox.imapUidValidity, Mailbox.imapLastUid)).all()
    assert set(checkpoints) == {(imaps[0].uidvalidity, 0)}
    assert by_mailbox == Counter(("sent", 1, m.mail_from) for m in received)
    assert sorted(m.message["Message-ID"] for m in received) == sorted(message_ids)
