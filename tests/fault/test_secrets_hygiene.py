"""Secrets and PII hygiene across the whole pipeline (RELIABILITY.md property 14).

One session with a sentinel OpenAI key and sentinel leads runs every flow an operator sees:
generation against the fake OpenAI server, delivery to the loopback SMTP server (one recipient
rejected with a reply that echoes its address), ingestion of an event file that names the
sentinel addresses (a reply, an open, malformed lines and an event for an unknown message),
and the campaign report. Then everything those runs left behind is scanned:

- every log line of those flow runs, paged through the API (the key at any level; addresses,
  names and bodies at INFO and above),
- every artifact (key, description, data),
- flow and task run states and parameters (where a traceback or an exception message lands),
- every file in the result storage (PREFECT_LOCAL_STORAGE_PATH), raw and deserialised,
- captured stdout/stderr and every Python log record of the process at INFO and above.

What the result storage holds, by design: one record per paid LLM answer (`generation-<hash>`),
the `Generation` with the draft's subject and body (so it carries the generated body and the
lead's first name the draft greets), model, tokens, latency and cost. Never the key, never an
address (the prompt has no address, the draft gate refuses added ones). No other task or flow
persists its result. The test asserts exactly that.
"""

import asyncio
import base64
import json
import logging
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from sqlalchemy import select

from core.engagement.event_files import parse_record
from core.engagement.event_records import EventFormat
from core.engagement.events import Malformed
from core.generation.llm import Generation
from db.base import utcnow
from db.models import CampaignLead, EmailSend, GeneratedMessage
from flows.campaign_report import campaign_report
from flows.ingest_engagement_events import ingest_engagement_events
from flows.process_campaign_sends import process_campaign_sends
from flows.send_scheduled_emails import send_scheduled_emails
from tasks.generation import CACHE_PREFIX
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.run_records import run_artifacts, run_logs
from tests.support.smtp_server import LoopbackSMTP

pytestmark = [pytest.mark.fault, pytest.mark.flows]

KEY = "sk-SENTINEL-4b1d9e0c-7f3a-key-never-logged"
ADDRESS = "sentinel.lead.7f3a@buyer.example"  # delivered, then replies
BOUNCED = "sentinel.bounce.7f3a@buyer.example"  # refused by SMTP with its address echoed
HELD = "sentinel.held.7f3a@buyer.example"  # its own data puts an address into the email
UNKNOWN = "sentinel.unknown.7f3a@buyer.example"  # only in the event file: no such send
MALFORMED = "sentinel.malformed.7f3a@buyer.example"  # only on malformed lines
ADDRESSES = (ADDRESS, BOUNCED, HELD, UNKNOWN, MALFORMED)
FIRST_NAME = "Quillon7f3a"  # lead data the draft greets
INJECTED = "sentinel.injected.7f3a@evil.example"  # in a lead's companyName (held lead)
BODY = "SENTINEL-BODY-91c2"
SUBJECT = "SENTINEL-SUBJECT-5e8a"
PII = (*ADDRESSES, INJECTED, FIRST_NAME, BODY, SUBJECT)

RULES = {
    "timezone": "UTC",
    "window": {
        "start": "00:00",
        "end": "23:59:59",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    },
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "fromName": "Alex",
    "fromEmail": "alex@seller.example",
}


def seed(sessions) -> str:
    due = utcnow() - timedelta(minutes=2)
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=RULES)
        for address in (ADDRESS, BOUNCED):
            lead = factories.lead(session, ws, email=address, firstName=FIRST_NAME)
            factories.enrolment(session, camp, lead, due=due)
        held = factories.lead(session, ws, email=HELD, companyName=f"write to {INJECTED}")
        factories.enrolment(session, camp, held, due=due)
        return camp.id


def responder(request: dict) -> dict:
    """The model answers with sentinel text, greeting the lead by the name in its profile."""
    return {"subject": f"Idea {SUBJECT}", "body": f"Hi {FIRST_NAME},\n\n{BODY}\n\nAlex"}


def event_file(path: Path, sends: dict[str, EmailSend]) -> Path:
    at = utcnow().isoformat()
    sent = sends[ADDRESS]
    lines: list[str | dict] = [
        {"type": "open", "occurredAt": at, "emailSendId": sent.id, "eventId": "o1"},
        {"type": "reply", "occurredAt": at, "email": ADDRESS, "eventId": "r1"},
        # Malformed: broken JSON, an unknown type, a type and an address swapped, a bad address.
        f'{{"type": "open", "email": "{MALFORMED}", ',
        {"type": "teleport", "occurredAt": at, "email": MALFORMED},
        {"type": MALFORMED, "occurredAt": at, "email": "open"},
        {"type": "open", "occurredAt": at, "email": f"{MALFORMED} {BODY}"},
        # An event for a message nobody sent: quarantined and reported, not dropped.
        {
            "type": "bounce",
            "occurredAt": at,
            "messageId": "<nobody.7f3a@elsewhere.example>",
            "email": UNKNOWN,
            "diagnostic": f"550 5.1.1 <{UNKNOWN}>: unknown; {BODY}",
        },
    ]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def run_flow(flow, **params) -> tuple[UUID, object]:
    state = asyncio.run(flow(**params, return_state=True))
    assert state.is_completed(), state.message
    return state.state_details.flow_run_id, asyncio.run(state.aresult())


async def _everything_stored(run_ids: list[UUID]) -> dict[str, list[str]]:
    """Every log (paged), artifact, and flow/task run state and parameters of these runs."""
    texts: dict[str, list[str]] = {"log_info": [], "log_debug": [], "artifact": [], "run": []}
    for log in await run_logs(*run_ids):
        bucket = "log_info" if log.level >= logging.INFO else "log_debug"
        texts[bucket].append(f"{log.name} {log.message}")
    texts["artifact"] = [
        f"{a.key} {a.description} {json.dumps(a.data, default=str)}"
        for a in await run_artifacts(*run_ids)
    ]
    async with get_client() as client:
        flow_runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
        )
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
        )
    assert len(flow_runs) == len(run_ids)
    for flow_run in flow_runs:
        message = flow_run.state.message if flow_run.state else ""
        texts["run"].append(f"{flow_run.name} {json.dumps(flow_run.parameters)} {message}")
    for task_run in task_runs:
        message = task_run.state.message if task_run.state else ""
        texts["run"].append(f"{task_run.name} {task_run.task_inputs} {message}")
    return texts


def result_files(root: Path) -> dict[str, tuple[str, str]]:
    """Each file in the result storage: (raw text plus decoded payload, repr of the object)."""
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(root)))
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        text = raw.decode("utf-8", "replace")
        try:
            payload = base64.b64decode(json.loads(raw)["result"]).decode("utf-8", "replace")
        except (ValueError, KeyError, TypeError):
            payload = ""
        key = path.relative_to(root).as_posix()
        found[key] = (text + "\n" + payload, repr(store.read(key).result))
    return found


def captured_output(request, capfd) -> tuple[str, str]:
    """stdout and stderr of the test so far: fd-level writes (capfd), and pytest's global
    capture, which is where Prefect's console handler writes (it bound sys.stderr at startup)."""
    out, err = capfd.readouterr()
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None and capman.is_globally_capturing():
        more_out, more_err = capman.read_global_capture()
        out, err = out + more_out, err + more_err
    return out, err


def test_no_key_anywhere_and_no_address_or_body_at_info(
    run_settings, sessions, tmp_path, capfd, caplog, request
):
    caplog.set_level(logging.INFO)
    campaign_id = seed(sessions)
    results_dir = Path(str(PREFECT_LOCAL_STORAGE_PATH.value()))
    assert results_dir == tmp_path / "results"  # conftest's run_settings points it here
    run_ids: list[UUID] = []
    with FakeOpenAI() as llm, LoopbackSMTP() as smtp:
        run_settings.update(
            openai_api_key=KEY,
            openai_base_url=llm.base_url,
            email_transport="smtp",
            smtp_host=smtp.host,
            smtp_port=str(smtp.port),
            smtp_security="none",
            unsubscribe_secret="hygiene-secret-0123456789",
            public_base_url="https://links.seller.example",
        )
        llm.set_responder(responder)
        llm.configure(fault_rates={"429": 0.3}, retry_after="0.01", seed=5)  # retries get logged
        smtp.reject_rcpt(BOUNCED, f"550 5.1.1 <{BOUNCED}>: Recipient address rejected")

        run_id, counts = run_flow(process_campaign_sends, as_of=utcnow() - timedelta(minutes=1))
        run_ids.append(run_id)
        assert (counts[campaign_id].generated, counts[campaign_id].held) == (2, 1)
        assert llm.stats().successes == 2  # the key was used: the real client, not the template

        run_id, delivered = run_flow(send_scheduled_emails, max_wait_seconds=0)
        run_ids.append(run_id)
        assert (delivered.total("sent"), delivered.total("bounced")) == (1, 1)
        assert [m.rcpt_tos for m in smtp.messages] == [(ADDRESS,)]
        assert BODY in smtp.messages[0].message.get_content()  # the sentinel body did go out

    with sessions() as session:
        sends = {s.toEmail: s for s in session.scalars(select(EmailSend))}
        messages = session.scalars(select(GeneratedMessage)).all()
        held = session.scalars(
            select(CampaignLead).where(CampaignLead.lastError.is_not(None))
        ).one()
    assert {m.model for m in messages} == {"gpt-4o-mini"}
    assert all(BODY in m.body for m in messages)
    assert "address" in held.lastError and INJECTED not in held.lastError

    path = event_file(tmp_path / "events.jsonl", sends)
    run_id, ingested = run_flow(ingest_engagement_events, source="file", path=str(path))
    run_ids.append(run_id)
    assert ingested.total("new") == 2 and ingested.total("quarantined") == 1
    assert ingested.malformed_total == 4 and ingested.stopped == {"replied": 1}

    run_id, report = run_flow(campaign_report)
    run_ids.append(run_id)
    assert report.totals()["generated"] == 2

    stored = asyncio.run(_everything_stored(run_ids))
    out, err = captured_output(request, capfd)
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    python_logs = [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records]

    # The scan sees what it should: every run logged, the malformed lines and the counts.
    info = "\n".join(stored["log_info"])
    assert "batch of 3: 2 scheduled, 1 held" in info and "new 2, duplicate 0" in info
    assert any(key.startswith("ingest-engagement-events-malformed") for key in stored["artifact"])
    assert "held: lead data in the template" in info and "quarantined 1, malformed 4" in info
    assert len(stored["log_info"]) > 20
    assert "batch of 3: 2 scheduled" in err and any("batch of 3" in t for t in python_logs)

    # What an operator or a log shipper sees at INFO and above.
    at_info = {
        **{f"log {i}": t for i, t in enumerate(stored["log_info"])},
        **{f"artifact {i}": t for i, t in enumerate(stored["artifact"])},
        **{f"run {i}": t for i, t in enumerate(stored["run"])},
        **{f"python log {i}": t for i, t in enumerate(python_logs)},
        **{f"stdout {i}": t for i, t in enumerate(out.splitlines())},
        **{f"stderr {i}": t for i, t in enumerate(err.splitlines())},
    }
    files = result_files(results_dir)
    everywhere = {
        **at_info,
        **{f"debug log {i}": t for i, t in enumerate(stored["log_debug"])},
        **{f"result {name}": raw + "\n" + obj for name, (raw, obj) in files.items()},
    }
    # (a)-(d) the key, at any level and in any form, not even its distinctive part.
    assert not [where for where, text in everywhere.items() if "SENTINEL-4b1d9e0c" in text]

    # Addresses, lead data and bodies: never at INFO or above, in artifacts, states or output.
    # The loopback SMTP server's own log (aiosmtpd's `mail.log`, which prints each RCPT TO)
    # stands for the remote MTA, not for this pipeline: its lines are left out.
    leaks = sorted(
        (where, secret)
        for where, text in at_info.items()
        if not text.startswith("mail.log ") and "| mail.log - " not in text
        for secret in PII
        if secret.lower() in text.lower()
    )
    assert not leaks, leaks

    # (c) The result storage: exactly the two paid LLM answers, and what each holds.
    assert sorted(files) == sorted(f"{CACHE_PREFIX}{m.inputHash}" for m in messages), (
        "only generation answers are persisted"
    )
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(results_dir)))
    for name, (raw, obj) in files.items():
        generation = store.read(name).result
        assert isinstance(generation, Generation)
        assert generation.draft.body == f"Hi {FIRST_NAME},\n\n{BODY}\n\nAlex"  # by design
        assert BODY in raw and SUBJECT in raw  # in the file, base64 of a pickle, not encrypted
        assert not [a for a in (*ADDRESSES, INJECTED) if a in raw or a in obj]


@pytest.mark.parametrize(
    ("fmt", "record"),
    [
        ("generic", {"type": MALFORMED, "occurredAt": "2025-03-04T09:15:00Z", "email": "open"}),
        ("sendgrid", {"event": MALFORMED, "sg_event_id": "e1", "email": "a@b.co", "timestamp": 1}),
        ("mailgun", {"signature": {}, "event-data": {"event": [MALFORMED], "timestamp": 1}}),
    ],
)
def test_a_malformed_reason_never_quotes_an_address(fmt, record):
    """The leak this suite found: a record with its fields swapped had its address quoted."""
    result = parse_record(record, EventFormat(fmt), source="test", line=3)
    assert isinstance(result, Malformed) and "unknown type" in result.reason
    assert MALFORMED not in result.reason and "<address>" in result.reason
