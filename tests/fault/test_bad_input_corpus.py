"""The bad-input corpus (tests/fixtures/bad_input/) through every stage that reads outside data.

Enrolment (the `campaign-pipeline` CLI, in-process), `process-campaign-sends` against the fake
OpenAI server, `send-scheduled-emails` to the loopback SMTP server, `ingest-engagement-events`
and the web app (unsubscribe links and webhooks) under uvicorn. For every case:

1. the error names the row (line, lead, send) and the field, where there is one;
2. it is recorded where an operator sees it: the CLI's stderr, `CampaignLead.lastError`,
   `EmailSend.statusReason`, a run's artifact, or an HTTP status with nothing stored;
3. nothing else is lost: every good row of the same input goes all the way through.

No case may end in a traceback. The corpus's README.md lists each case and its outcome.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app as cli_app
from core.campaigns.schedule import next_window_opening
from core.campaigns.sending_rules import parse_sending_rules
from core.delivery.unsubscribe import sign_token
from core.generation.prompt import PROFILE_CHARS, PROFILE_VALUE_CHARS
from db.base import utcnow
from db.models import (
    Campaign,
    CampaignLead,
    EmailSend,
    EngagementEvent,
    EngagementInbox,
    GeneratedMessage,
    Lead,
    SequenceStep,
    Suppression,
)
from flows.ingest_engagement_events import ingest_engagement_events
from flows.process_campaign_sends import process_campaign_sends
from flows.send_scheduled_emails import send_scheduled_emails
from tests import factories
from tests.integration.conftest import serve  # noqa: F401  (the fixture, shared)
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import PERSONAL_LINE, default_responder
from tests.support.run_records import run_with_artifacts
from tests.support.smtp_server import LoopbackSMTP, ReceivedMessage
from web.app import create_app
from web.webhooks import WebhookSecrets

pytestmark = pytest.mark.fault

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bad_input"
ONE_MB = 1_000_000
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SENDER = "alex@seller.example"
MAIN_RULES = {
    "timezone": "UTC",
    "window": {"start": "00:00", "end": "23:59:59", "days": EVERY_DAY},
    "minGapSeconds": 0,
    "jitterSeconds": 0,
    "dailyLimit": 1000,
    "mailboxDailyLimit": 1000,
    # The campaign owner's own text can carry a line break too.
    "fromName": "Alex\r\nX-Injected: yes",
    "fromEmail": SENDER,
}
TOKYO_RULES = MAIN_RULES | {
    "timezone": "Asia/Tokyo",
    "window": {"start": "09:00", "end": "17:00", "days": EVERY_DAY},
    "fromName": "Alex",
}
# Every header a delivered message may have; anything else was injected.
HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
}
SECRET = "corpus-unsubscribe-secret-0123456789"


# -- the corpus --------------------------------------------------------------------------------


def _expand(value: Any) -> Any:
    """JSON with each "@@1MB@@" made 1,000,000 characters (data files stay small)."""
    if isinstance(value, str):
        return value.replace("@@1MB@@", "A" * ONE_MB)
    if isinstance(value, dict):
        return {key: _expand(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item) for item in value]
    return value


def corpus_json(relative: str) -> Any:
    return _expand(json.loads((CORPUS / relative).read_text(encoding="utf-8")))


def corpus_file(relative: str, tmp_path: Path) -> Path:
    """A corpus file as a path, its size markers expanded (see the corpus README)."""
    data = (CORPUS / relative).read_bytes()
    if b"@@1MB" not in data:
        return CORPUS / relative
    data = data.replace(b"@@1MB@@", b"A" * ONE_MB)
    data = data.replace(b"@@1MB_LINES@@", (b"x" * 999 + b"\n") * 1000)
    path = tmp_path / Path(relative).name
    path.write_bytes(data)
    return path


LLM_ANSWERS: dict[str, dict[str, Any]] = corpus_json("llm/answers.json")
RULES_CASES: dict[str, dict[str, Any]] = corpus_json("campaigns/sending_rules.json")
TEMPLATE_CASES: dict[str, dict[str, Any]] = corpus_json("campaigns/templates.json")


# -- the command line --------------------------------------------------------------------------


def cli(database_url: str, *args: str) -> tuple[int, str, str]:
    """Run `campaign-pipeline ARGS` in-process: (exit code, stdout, stderr), never a traceback."""
    result = CliRunner().invoke(cli_app, list(args), env={"DATABASE_URL": database_url})
    # An exception other than the command's own exit is what a user would see as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


# Per leads file: the addresses enrolled, and each rejected line as (line, field, reason).
LEAD_FILES: dict[str, tuple[list[str], list[tuple[int, str, str]]]] = {
    "addresses.csv": (
        [
            "ann@buyer.example",
            "用户@例子.广告",
            "jörg@bücher.example",
            "info@müller.example",  # given as info@xn--mller-kva.example
            "ben@buyer.example",
        ],
        [
            (3, "email", "'user@@x' is not a valid address"),
            (4, "email", "'a b@x.com' is not a valid address"),
            (5, "email", "'nobody' is not a valid address (An email address must have an @-sign"),
            (6, "email", "is empty; every lead needs an address"),
            (7, "email", "unsafe characters: RIGHT-TO-LEFT OVERRIDE"),
            (8, "email", "'sam@shop.test' is not a valid address (The part after the @-sign is a"),
            (9, "email", "'a@b' is not a valid address"),
            (10, "email", "'user@xn--zz.example' is not a valid address (The part after the"),
            (14, "email", "duplicate of line 13"),
        ],
    ),
    "timezones.csv": (
        ["tz-paris@buyer.example", "tz-blank@buyer.example", "tz-padded@buyer.example"],
        [
            (3, "timezone", "'Mars/Olympus' is not an IANA time zone"),
            (4, "timezone", "'../../../etc/localtime' is not an IANA time zone"),
            (5, "timezone", "'UTC+02:00' is not an IANA time zone"),
        ],
    ),
    "oversized.csv": (
        ["big-ok1@buyer.example", "big-ok2@buyer.example"],
        [
            (3, "firstName", "is 1,000,000 characters; a value may have at most 131,072"),
            (4, "notes", "is 1,000,000 characters; a value may have at most 131,072 (the row"),
        ],
    ),
    "truncated_mid_row.csv": (
        ["cut-ok1@buyer.example", "cut-ok2@buyer.example"],
        [(4, "(row)", "has 2 fields, the header has 3")],
    ),
    "truncated_mid_quote.csv": (
        ["quote-ok1@buyer.example", "quote-ok2@buyer.example"],
        [(4, "companyName", "the file ends inside this quoted value")],
    ),
    "nul_byte.csv": (
        ["nul-ok1@buyer.example", "nul-ok2@buyer.example"],
        [(3, "firstName", "contains a NUL character")],
    ),
    "people.csv": (
        [
            "zoe@buyer.example",
            "eve@buyer.example",
            "mallory@buyer.example",
            "oscar@buyer.example",
            "ivy@buyer.example",
            "iris@buyer.example",
            "pat@buyer.example",
            "leaky@buyer.example",
            *(
                f"{name}@buyer.example"
                for name in (
                    "llm-crlf",
                    "llm-ew",
                    "llm-ew-bcc",
                    "llm-dot",
                    "llm-big",
                    "llm-rlo",
                    "llm-rtl",
                    "llm-notjson",
                )
            ),
            "control@buyer.example",
        ],
        [],
    ),
}


def enrolled_addresses(sessions: sessionmaker[Session], campaign_id: str) -> set[str]:
    with sessions() as session:
        return set(
            session.scalars(
                select(Lead.email)
                .join(CampaignLead, CampaignLead.leadId == Lead.id)
                .where(CampaignLead.campaignId == campaign_id)
            )
        )


@pytest.mark.parametrize("name", sorted(LEAD_FILES))
def test_each_leads_file_enrols_its_good_rows_and_names_each_bad_one(
    database_url, sessions, tmp_path, name
):
    with sessions.begin() as session:
        campaign_id = factories.campaign(session, factories.workspace(session), steps=1).id
    good, bad = LEAD_FILES[name]
    path = corpus_file(f"leads/{name}", tmp_path)
    code, out, err = cli(database_url, "enroll", "--campaign", campaign_id, "--csv", str(path))
    assert code == 0, err
    assert f"enrolled {len(good)}, already enrolled 0, rejected {len(bad)}" in out
    reported = [line for line in err.splitlines() if line.startswith(f"{path}: line ")]
    assert len(reported) == len(bad), err
    for (line, field, reason), text in zip(bad, reported, strict=True):
        assert text.startswith(f"{path}: line {line}: {field}: "), text
        assert reason in text, text
    assert enrolled_addresses(sessions, campaign_id) == set(good)


def test_unicode_and_injected_lead_text_is_stored_exactly_as_written(database_url, sessions):
    """Enrolment keeps values as typed (line breaks too); later stages make them harmless."""
    with sessions.begin() as session:
        campaign_id = factories.campaign(session, factories.workspace(session), steps=1).id
    code, _, err = cli(
        database_url, "enroll", "--campaign", campaign_id, "--csv", str(CORPUS / "leads/people.csv")
    )
    assert code == 0, err
    with sessions() as session:
        leads = {lead.email: lead for lead in session.scalars(select(Lead))}
    zoe = leads["zoe@buyer.example"]
    assert (zoe.firstName, zoe.lastName, zoe.companyName) == ("Zoë 🚀", "مرحبا", "שלום Ltd 🌍")
    assert zoe.timezone == "Asia/Tokyo" and zoe.customFields == {"case": "unicode-names"}
    assert leads["eve@buyer.example"].lastName.startswith("Smith\r\nBcc: spy@evil.example")


def test_a_campaign_file_with_bad_templates_or_rules_is_refused_whole(database_url, sessions):
    expected = {
        "bad_templates.yaml": [
            "steps.0.subjectTemplate: Value error, template: line 1, column 4, near '{{firstName'"
            ": '{{' is never closed with '}}'",
            "steps.0.bodyTemplate: Value error, template: {{nope}} is not a known variable",
            "steps.1.subjectTemplate: Value error, template: line 1, column 1, near"
            " '{{ firstName.__class__.__mro__ }}': a name is letters, digits and '_'",
            "steps.1.bodyTemplate: Value error, template: line 1, column 1, near '{% if firstName"
            " %}Hi{% endif %}': template logic ({% … %}) is not supported",
            "steps.2.subjectTemplate: Value error, template: line 1, column 4, near '}}': '}}'"
            " without an opening '{{'",
            "steps.2.bodyTemplate: Value error, template: line 1, column 1, near '{{ 7*7 }}'",
        ],
        "bad_rules.yaml": [
            "sendingRules.timezone: Value error, 'Mars/Olympus' is not an IANA time zone",
            "sendingRules.window: Value error, window end 09:00:00 must be after start 18:00:00",
            "sendingRules.dailyLimit: Input should be a valid integer",
            "sendingRules.dailyLimt: Extra inputs are not permitted",
        ],
        "not_utf8.yaml": ["not_utf8.yaml: line 1: not UTF-8 (invalid continuation byte)"],
    }
    for name, problems in expected.items():
        code, _, err = cli(
            database_url, "campaign", "create", "--file", str(CORPUS / "campaigns" / name)
        )
        assert code == 1, err
        for problem in problems:
            assert problem in err, (name, err)
        assert "nothing was written" in err
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0


# -- generation and delivery -------------------------------------------------------------------


def _lead_profile(request: dict[str, Any]) -> dict[str, Any]:
    for message in request.get("messages") or []:
        found = re.search(r"<lead_profile>(.*?)</lead_profile>", str(message.get("content")))
        if found:
            return json.loads(found.group(1))
    return {}


def corpus_model(request: dict[str, Any]) -> dict[str, Any] | str:
    """The fake LLM: the corpus answer for the lead's `case` column, else the default echo."""
    case = LLM_ANSWERS.get(_lead_profile(request).get("customFields.case", ""))
    return default_responder(request) if case is None else case["answer"]


def delivered_to(smtp: LoopbackSMTP, address: str) -> EmailMessage:
    (received,) = smtp.messages_to(address)
    return received.message


def assert_one_recipient_and_no_extra_header(received: ReceivedMessage) -> None:
    message = received.message
    assert len(received.rcpt_tos) == 1
    assert set(message.keys()) <= HEADERS, set(message.keys()) - HEADERS
    to_headers = message.get_all("To")
    assert to_headers is not None, "no To header"
    (to,) = to_headers
    (address,) = to.addresses
    # The header carries an IDN domain in Punycode; the envelope has it as stored.
    assert address.addr_spec == received.rcpt_tos[0] or received.smtp_utf8
    (sender,) = message["From"].addresses
    assert sender.addr_spec == SENDER and received.mail_from == SENDER


def table_rows(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def seed_pipeline(sessions: sessionmaker[Session], due: Any) -> dict[str, str]:
    """Campaigns and leads the web app could have written (bypassing enrolment's checks).

    Returns campaign ids by name: "main" (the CSVs are enrolled here), "tz", "rules:<case>" and
    "template:<case>".
    """
    ids: dict[str, str] = {}
    with sessions.begin() as session:
        ws = factories.workspace(session, id="corpus-ws")
        main = factories.campaign(session, ws, steps=1, name="corpus", sendingRules=MAIN_RULES)
        ids["main"] = main.id
        # Lead rows no leads file could produce: 1 MB values, customFields that is no object.
        oversized: dict[str, dict[str, Any]] = {
            "db-big-name@buyer.example": {"firstName": "A" * ONE_MB},
            "db-big-custom@buyer.example": {"customFields": {"notes": "A" * ONE_MB}},
            "db-list-custom@buyer.example": {"customFields": ["not", "an", "object"]},
        }
        for email, fields in oversized.items():
            lead = factories.lead(session, ws, email=email, **fields)
            factories.enrolment(session, main, lead, due=due)
        # A lead whose name grew to 1 MB after its message was written: the To name is bounded.
        lead = factories.lead(
            session, ws, email="db-big-display@buyer.example", lastName="B" * ONE_MB
        )
        factories.enrolment(session, main, lead, status="completed", currentStepOrder=2)
        factories.scheduled_send(session, main, lead, scheduled_for=due)

        tz = factories.campaign(session, ws, steps=1, name="time zones", sendingRules=TOKYO_RULES)
        ids["tz"] = tz.id
        for email, zone in {
            "tz-none@buyer.example": None,
            "tz-mars@buyer.example": "Mars/Olympus",
            "tz-ny@buyer.example": "America/New_York",
        }.items():
            factories.enrolment(
                session, tz, factories.lead(session, ws, email=email, timezone=zone), due=due
            )

        for case, spec in RULES_CASES.items():
            camp = factories.campaign(
                session, ws, steps=2, name=f"rules: {case}", sendingRules=spec["sendingRules"]
            )
            ids[f"rules:{case}"] = camp.id
            due_lead = factories.lead(session, ws, email=f"rules-{case}@buyer.example")
            factories.enrolment(session, camp, due_lead, due=due)
            # A send generated before the rules were broken, due now.
            sent_lead = factories.lead(session, ws, email=f"rules-{case}-send@buyer.example")
            factories.enrolment(
                session, camp, sent_lead, currentStepOrder=2, due=due + timedelta(days=3)
            )
            factories.scheduled_send(session, camp, sent_lead, scheduled_for=due)

        for case, spec in TEMPLATE_CASES.items():
            camp = factories.campaign(
                session, ws, steps=0, name=f"template: {case}", sendingRules=MAIN_RULES
            )
            ids[f"template:{case}"] = camp.id
            session.add(
                SequenceStep(
                    campaignId=camp.id,
                    stepOrder=1,
                    delayDays=0,
                    subjectTemplate=spec["subject"],
                    bodyTemplate=spec["body"],
                )
            )
            lead = factories.lead(
                session, ws, email=f"template-{case}@buyer.example", firstName="Tim"
            )
            factories.enrolment(session, camp, lead, due=due)
    return ids


@pytest.fixture
def llm(run_settings) -> Iterator[FakeOpenAI]:
    """The fake LLM answering with the corpus, configured."""
    with FakeOpenAI(responder=corpus_model) as llm:
        run_settings.update(openai_api_key="sk-corpus-not-real", openai_base_url=llm.base_url)
        yield llm


@pytest.fixture
def smtp(run_settings, llm) -> Iterator[LoopbackSMTP]:
    """The loopback SMTP server, configured, beside the corpus's fake LLM."""
    with LoopbackSMTP() as smtp:
        run_settings.update(
            email_transport="smtp",
            smtp_host=smtp.host,
            smtp_port=str(smtp.port),
            smtp_security="none",
            unsubscribe_secret=SECRET,
            public_base_url="https://links.seller.example",
        )
        yield smtp


@pytest.mark.flows
def test_the_corpus_through_enrolment_generation_and_delivery(
    llm, smtp, database_url, sessions, tmp_path
):
    ids = seed_pipeline(sessions, utcnow() - timedelta(minutes=1))
    for name in LEAD_FILES:
        path = corpus_file(f"leads/{name}", tmp_path)
        code, _, err = cli(database_url, "enroll", "--campaign", ids["main"], "--csv", str(path))
        assert code == 0, err
    as_of = utcnow()  # after enrolment, which makes leads due from the moment they are enrolled

    with sessions() as session:
        due_before = session.scalar(
            select(func.count())
            .select_from(CampaignLead)
            .where(CampaignLead.status == "active", CampaignLead.nextScheduledDate <= as_of)
        )

    # -- generation --------------------------------------------------------------------------
    counts, artifacts, _ = asyncio.run(
        run_with_artifacts(process_campaign_sends, as_of=as_of, batch_size=40)
    )
    table = {row["campaign_id"]: row for row in table_rows(artifacts["process-campaign-sends"])}
    with sessions() as session:
        rows = session.execute(
            select(Lead.email, CampaignLead, GeneratedMessage, EmailSend)
            .join(CampaignLead, CampaignLead.leadId == Lead.id)
            .outerjoin(
                GeneratedMessage,
                (GeneratedMessage.leadId == Lead.id)
                & (GeneratedMessage.campaignId == CampaignLead.campaignId),
            )
            .outerjoin(EmailSend, EmailSend.generatedMessageId == GeneratedMessage.id)
        ).all()
    by_email = {email: (enrolment, message, send) for email, enrolment, message, send in rows}

    def held(email: str, *reasons: str) -> None:
        enrolment, message, _ = by_email[email]
        assert message is None and enrolment.status == "active", email
        assert enrolment.attempts == 1 and enrolment.nextScheduledDate > as_of, email
        for reason in reasons:
            assert reason in enrolment.lastError, (email, enrolment.lastError)

    # Lead data that would put a link, an address or instructions into the template is held
    # before any LLM call, with the reason on the enrolment (and no address in the reason).
    held("oscar@buyer.example", "lead data in the template: adds 1 email address(es)")
    held(
        "ivy@buyer.example",
        "links to evil.example, which is not allowed",
        "contains 'ignore your instructions', which must never appear in an email",
    )
    held(
        "iris@buyer.example",
        "lead data in the template: contains 'system prompt', which must never appear",
        "contains 'ignore previous instructions'",
    )
    held("db-big-name@buyer.example", f"subject is {ONE_MB + 11} characters; the limit is 120")
    held("db-list-custom@buyer.example", "Lead.customFields is not a JSON object")
    reasons = "\n".join(enrolment.lastError or "" for enrolment, _, _ in by_email.values())
    assert not [email for email in by_email if email in reasons]  # reasons carry no address

    # Every LLM answer in the corpus either passes the gate or falls back to the template.
    for case, expected in LLM_ANSWERS.items():
        _, message, send = by_email[f"{_llm_lead(case)}@buyer.example"]
        assert send is not None and send.status == "scheduled", case
        if expected["outcome"] == "generated":
            assert message.fallbackReason is None, (case, message.fallbackReason)
        else:
            assert message.fallbackReason is not None, case
            for reason in expected["reasons"]:
                assert reason in message.fallbackReason, (case, message.fallbackReason)
            name = message.subject.removeprefix("Step 1 for ")
            assert message.body == f"Hi {name}, step 1 about Acme.", case
    for email, (_, message, _) in by_email.items():
        if message is not None:
            text = f"{message.subject}\n{message.body}"
            assert "evil" not in text.lower() and "system prompt" not in text, email
            assert len(message.subject) <= 120 and len(message.body) <= 5000, email
    # 1 MB of customFields reached the model cut to a bounded profile, saying so; what came
    # back is an ordinary email. No request carried more than the profile's bound of lead data.
    _, big_custom, big_send = by_email["db-big-custom@buyer.example"]
    assert big_send is not None and big_custom.fallbackReason is None
    profiles = [_lead_profile(record.body) for record in llm.request_log()]
    cut = {p["customFields.notes"] for p in profiles if "cut]" in p.get("customFields.notes", "")}
    assert cut == {
        "A" * PROFILE_VALUE_CHARS + f" [{ONE_MB - PROFILE_VALUE_CHARS:,} more characters cut]"
    }
    assert max(len(json.dumps(p)) for p in profiles) < PROFILE_CHARS + 1_000

    # Broken sendingRules hold that campaign's leads with the rule named; others carry on.
    for case, spec in RULES_CASES.items():
        email = f"rules-{case}@buyer.example"
        if spec.get("generation") == "scheduled":
            assert by_email[email][2] is not None, case
            continue
        held(email, "sendingRules: ", *spec["reasons"])
        assert table[ids[f"rules:{case}"]]["held"] == 1
    # Broken templates hold the lead with the template, line and column named.
    for case, spec in TEMPLATE_CASES.items():
        email = f"template-{case}@buyer.example"
        if "reason" in spec:
            held(email, spec["reason"])
            assert table[ids[f"template:{case}"]]["held"] == 1
        else:
            _, message, send = by_email[email]
            # The fake model echoes the rendered draft, with one sentence added.
            assert (message.subject, message.body) == (
                spec["scheduled_subject"],
                f"{PERSONAL_LINE}\n\n{spec['scheduled_body']}",
            )
            assert send is not None
    # A lead time zone that does not exist falls back to the campaign's (README: only a valid
    # lead zone overrides it); nothing is held for it.
    window = parse_sending_rules(TOKYO_RULES).window
    slot = {
        zone: by_email[f"tz-{zone}@buyer.example"][2].scheduledFor
        for zone in ("none", "mars", "ny")
    }
    assert (
        slot["mars"] == slot["none"] == next_window_opening(as_of, window, ZoneInfo("Asia/Tokyo"))
    )
    assert slot["ny"] == next_window_opening(as_of, window, ZoneInfo("America/New_York"))
    assert by_email["tz-mars@buyer.example"][0].lastError is None

    # Nothing else lost: every claimed lead is held with its reason or has its send.
    assert sum(row.claimed for row in counts.values()) == due_before
    for email, (enrolment, message, send) in by_email.items():
        assert (message is not None and send is not None) != (enrolment.lastError is not None), (
            email
        )

    # -- delivery ----------------------------------------------------------------------------
    report, artifacts, _ = asyncio.run(run_with_artifacts(send_scheduled_emails))
    with sessions() as session:
        sends = {
            email: send
            for email, send in session.execute(
                select(Lead.email, EmailSend).join(EmailSend, EmailSend.leadId == Lead.id)
            )
        }
    for received in smtp.messages:
        assert_one_recipient_and_no_extra_header(received)
    sent = {email for email, send in sends.items() if send.status == "sent"}
    assert sorted(r.rcpt_tos[0] for r in smtp.messages) == sorted(sent)

    # Internationalised addresses: an ASCII local part at an IDN domain goes with SMTPUTF8 (the
    # envelope is exactly EmailSend.toEmail), its To header in Punycode; a non-ASCII local part
    # cannot be written in a 7-bit header, so that send fails with the field named.
    (idn,) = smtp.messages_to("info@müller.example")
    assert idn.smtp_utf8 and idn.rcpt_tos == ("info@müller.example",)
    assert idn.message["To"].addresses[0].addr_spec == "info@xn--mller-kva.example"
    for email, char in (("jörg@bücher.example", "'ö'"), ("用户@例子.广告", "'户', '用'")):
        assert sends[email].status == "failed", email
        assert sends[email].statusReason == (
            f"Lead.email: Internationalized characters before the @-sign are not supported: {char}."
        )
    assert "Lead.email: Internationalized characters" in str(
        table_rows(artifacts["send-scheduled-emails"])
    )

    # Header injection: names and subjects arrive as one line, with one recipient.
    eve = delivered_to(smtp, "eve@buyer.example")
    assert eve["Bcc"] is None and "\n" not in eve["To"].addresses[0].display_name
    assert eve["To"].addresses[0].display_name.startswith("Eve Smith Bcc: spy@evil.example = ?UTF")
    mallory = delivered_to(smtp, "mallory@buyer.example")
    assert mallory["Subject"] == by_email["mallory@buyer.example"][1].subject
    assert mallory["Subject"] == "Step 1 for Mallory X-Injected: yes"
    assert mallory["From"].addresses[0].display_name == "Alex X-Injected: yes"
    for case in ("llm-encoded-word-subject", "llm-smtp-smuggling-body", "llm-emoji-rtl"):
        message = delivered_to(smtp, f"{_llm_lead(case)}@buyer.example")
        expected = LLM_ANSWERS[case]
        if "delivered_subject" in expected:
            assert message["Subject"] == expected["delivered_subject"], case
        if "delivered_body" in expected:
            assert message.get_content() == expected["delivered_body"] + "\n", case
    # Emoji and right-to-left text arrive exactly as generated.
    zoe = delivered_to(smtp, "zoe@buyer.example")
    _, zoe_message, _ = by_email["zoe@buyer.example"]
    assert zoe["Subject"] == zoe_message.subject == "Step 1 for Zoë 🚀"
    assert zoe.get_content() == zoe_message.body + "\n"
    assert "שלום Ltd 🌍" in zoe_message.body
    assert zoe["To"].addresses[0].display_name == "Zoë 🚀 مرحبا"
    # A 1 MB name is cut to fit one header line.
    big = delivered_to(smtp, "db-big-display@buyer.example")
    assert big["To"].addresses[0].display_name == "Sarah " + "B" * 69

    # Broken sendingRules pause that campaign's due sends, with the reason on each.
    for case, spec in RULES_CASES.items():
        paused = sends[f"rules-{case}-send@buyer.example"]
        assert paused.status == "scheduled" and paused.claimToken is None, case
        for reason in spec["reasons"]:
            assert reason in paused.statusReason, (case, paused.statusReason)
    # Nothing else lost: every send due by now left, except the two IDN local parts.
    due = {e for e, s in sends.items() if s.scheduledFor <= as_of and not e.startswith("rules-")}
    assert due - sent == {"jörg@bücher.example", "用户@例子.广告"}
    assert report.total("sent") == len(sent)


def _llm_lead(case: str) -> str:
    """The local part of the people.csv lead whose `case` column names this LLM answer."""
    return {
        "injection-obeyed": "pat",
        "injection-leak": "leaky",
        "llm-crlf-subject": "llm-crlf",
        "llm-encoded-word-subject": "llm-ew",
        "llm-encoded-word-bcc": "llm-ew-bcc",
        "llm-smtp-smuggling-body": "llm-dot",
        "llm-1mb-body": "llm-big",
        "llm-bidi-override-subject": "llm-rlo",
        "llm-emoji-rtl": "llm-rtl",
        "llm-not-json": "llm-notjson",
    }[case]


# -- ingestion ---------------------------------------------------------------------------------

# Per event file: events ingested, and each malformed line as (line, start of its reason).
EVENT_FILES: dict[str, tuple[int, list[tuple[int, str]]]] = {
    "truncated.jsonl": (
        3,
        [
            (2, "record: not valid JSON ("),
            (5, "occurredAt: not a date"),
            (7, "record: not valid JSON (Unterminated string"),
        ],
    ),
    "truncated.csv": (
        3,
        [
            (4, "record: has 2 fields, the header has 5"),
            (6, "type: unknown type 'teleport'"),
            (7, "record: has 3 fields, the header has 5"),
        ],
    ),
}


@pytest.mark.flows
def test_truncated_event_files_report_each_bad_line_and_ingest_the_rest(run_settings, sessions):
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=MAIN_RULES)
        for n in (1, 2):
            lead = factories.lead(session, ws, email=f"events-{n}@buyer.example")
            factories.enrolment(
                session, camp, lead, currentStepOrder=2, due=utcnow() + timedelta(days=3)
            )
            factories.scheduled_send(session, camp, lead, id=f"corpus-send-{n}", status="sent")
    for name, (new, malformed) in EVENT_FILES.items():
        report, artifacts, _ = asyncio.run(
            run_with_artifacts(
                ingest_engagement_events, source="file", path=str(CORPUS / "events" / name)
            )
        )
        assert report.total("new") == new, name
        assert report.malformed_total == len(malformed), name
        listed = table_rows(artifacts["ingest-engagement-events-malformed"])
        for (line, reason), record, row in zip(malformed, report.malformed, listed, strict=True):
            assert (record.line, record.source) == (line, f"file:{name}"), name
            assert record.reason.startswith(reason), (name, record.reason)
            assert (row["line"], row["reason"]) == (record.line, record.reason)
    with sessions() as session:
        events = session.scalars(select(EngagementEvent.type)).all()
        replied = session.scalars(
            select(CampaignLead.status).join(Lead).where(Lead.email == "events-2@buyer.example")
        ).one()
    assert sorted(events) == ["click", "click", "open", "open", "reply", "reply"]
    assert replied == "replied"  # the reply on the line after the cut one still stopped the lead


# -- the web app -------------------------------------------------------------------------------

ONE_CLICK = {"content": "List-Unsubscribe=One-Click"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def snapshot(sessions: sessionmaker[Session]) -> dict[str, object]:
    """Every row the endpoints could add or change."""
    with sessions() as session:
        return {
            "counts": [
                session.scalar(select(func.count()).select_from(model))
                for model in (Suppression, EngagementEvent, EngagementInbox)
            ],
            "enrolments": sorted(
                tuple(row)
                for row in session.execute(
                    select(CampaignLead.id, CampaignLead.status, CampaignLead.updatedAt)
                )
            ),
            "sends": sorted(
                tuple(row)
                for row in session.execute(
                    select(EmailSend.id, EmailSend.status, EmailSend.updatedAt)
                )
            ),
        }


def test_forged_unsubscribe_tokens_get_a_4xx_and_change_nothing(serve, sessions):  # noqa: F811
    spec = corpus_json("web/forged_tokens.json")
    with sessions.begin() as session:
        ws = factories.workspace(session)
        camp = factories.campaign(session, ws, steps=2, sendingRules=MAIN_RULES)
        for n, send_id in enumerate((spec["send"], spec["other_send"])):
            lead = factories.lead(session, ws, email=f"unsub-{n}@buyer.example")
            factories.enrolment(session, camp, lead, currentStepOrder=2)
            factories.scheduled_send(session, camp, lead, id=send_id, status="sent")
    secret = SECRET.encode()
    valid = sign_token(secret, spec["send"])
    payload, signature = valid.split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    made = {
        "oversized": f"{payload}{'A' * 600}.{signature}",
        "flip_signature": f"{payload}.{flipped}",
        "truncate_signature": f"{payload}.{signature[:-4]}",
        "pad_payload": f"{payload}==.{signature}",
        "swap_payload": f"{sign_token(secret, spec['other_send']).split('.')[0]}.{signature}",
        "sign_missing_send": sign_token(secret, "no-such-send"),
    }
    before = snapshot(sessions)
    with serve(create_app(sessions, secret)) as client:
        for case in spec["cases"]:
            token = case["token"] if "token" in case else made[case["make"]]
            page = client.get(f"/unsubscribe/{token}")
            click = client.post(f"/unsubscribe/{token}", headers=FORM, **ONE_CLICK)
            assert (page.status_code, click.status_code) == (case["status"],) * 2, case["case"]
            assert "Traceback" not in page.text + click.text
        assert snapshot(sessions) == before
        # Nothing else lost: the real link of the same send still works.
        assert client.post(f"/unsubscribe/{valid}", headers=FORM, **ONE_CLICK).status_code == 200
    with sessions() as session:
        statuses = dict(
            session.execute(select(Lead.email, CampaignLead.status).join(CampaignLead)).all()
        )
    assert statuses == {"unsub-0@buyer.example": "unsubscribed", "unsub-1@buyer.example": "active"}


MAILGUN_KEY = "key-corpus-0123456789abcdef"
POSTMARK = ("postmark-hooks", "correct horse battery staple")


class Signer:
    """Requests signed as each provider signs them, and each forgery the corpus names."""

    def __init__(self, payloads: dict[str, Any]) -> None:
        self.payloads = payloads
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.sent: dict[str, tuple[bytes, dict[str, str]]] = {}

    def secrets(self) -> WebhookSecrets:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return WebhookSecrets(
            sendgrid_public_key=base64.b64encode(public).decode(),
            mailgun_signing_key=SecretStr(MAILGUN_KEY),
            postmark_username=POSTMARK[0],
            postmark_password=SecretStr(POSTMARK[1]),
        )

    def request(self, provider: str, forge: str) -> tuple[bytes, dict[str, str]]:
        json_type = {"Content-Type": "application/json"}
        stamp = str(int(time.time()) - (3600 if forge == "stale" else 0))
        if forge in ("replay", "malleate", "replay_edited"):
            body, headers = self.sent[provider]
            if forge == "malleate":
                name = "X-Twilio-Email-Event-Webhook-Signature"
                r, s = decode_dss_signature(base64.b64decode(headers[name]))
                order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
                other = encode_dss_signature(r, order - s)
                headers = headers | {name: base64.b64encode(other).decode()}
            if forge == "replay_edited":
                edited = json.loads(body)
                edited["event-data"]["event"] = "complained"
                body = json.dumps(edited).encode()
            return body, headers
        if provider == "sendgrid":
            body = json.dumps(self.payloads["sendgrid"]).encode()
            key = ec.generate_private_key(ec.SECP256R1()) if forge == "other_key" else self.key
            signature = base64.b64encode(
                key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
            ).decode()
            if forge == "tamper_body":
                body = body.replace(b'"open"', b'"click"')
            if forge == "garbage_signature":
                signature = "not base64!"
            if forge == "unsigned":
                return body, json_type
            return body, json_type | {
                "X-Twilio-Email-Event-Webhook-Signature": signature,
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            }
        if provider == "mailgun":
            token = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()
            signing_key = "another-key" if forge == "other_key" else MAILGUN_KEY
            digest = hmac.new(
                signing_key.encode(), (stamp + token).encode(), hashlib.sha256
            ).hexdigest()
            if forge == "garbage_signature":
                digest = "z" * 64
            block = {"timestamp": stamp, "token": token, "signature": digest}
            payload = self.payloads["mailgun"] | (
                {} if forge == "unsigned" else {"signature": block}
            )
            return json.dumps(payload).encode(), json_type
        body = json.dumps(self.payloads.get(provider, {})).encode()
        user, password = POSTMARK[0], "wrong" if forge == "other_key" else POSTMARK[1]
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        authorization = {
            "garbage_signature": "Basic !!!not-base64",
            "bearer": "Bearer corpus-token",
            "unsigned": None,
        }.get(forge, f"Basic {basic}")
        return body, json_type | ({"Authorization": authorization} if authorization else {})


def test_forged_webhook_signatures_get_a_4xx_and_store_nothing(serve, sessions):  # noqa: F811
    spec = corpus_json("web/forged_webhooks.json")
    signer = Signer(spec["payloads"])
    with serve(create_app(sessions, SECRET.encode(), signer.secrets())) as client:

        def post(case: dict[str, Any]) -> httpx.Response:
            body, headers = signer.request(case["provider"], case["forge"])
            return client.post(f"/webhooks/{case['provider']}", content=body, headers=headers)

        before = snapshot(sessions)
        for case in spec["cases"]:
            response = post(case)
            assert response.status_code == case["status"], (case["case"], response.text)
            assert response.json() == {"error": case["error"]}, case["case"]
        assert snapshot(sessions) == before
        # Nothing else lost: a correctly signed request of each provider is stored once...
        for provider in ("sendgrid", "mailgun", "postmark"):
            body, headers = signer.request(provider, "valid")
            response = client.post(f"/webhooks/{provider}", content=body, headers=headers)
            assert response.status_code == 200, (provider, response.text)
            signer.sent[provider] = (body, headers)
        stored = snapshot(sessions)
        # ...and a replay of it, however respelt or edited, is refused.
        for case in spec["replays"]:
            response = post(case)
            assert response.status_code == case["status"], (case["case"], response.text)
            assert response.json() == {"error": case["error"]}, case["case"]
        assert snapshot(sessions) == stored
    with sessions() as session:
        rows = session.scalars(select(EngagementInbox)).all()
    assert sorted(row.provider for row in rows) == ["mailgun", "postmark", "sendgrid"]
    mailgun = next(row for row in rows if row.provider == "mailgun")
    assert mailgun.payload["event-data"]["event"] == "opened"
