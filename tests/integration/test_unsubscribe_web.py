"""The unsubscribe endpoint over real HTTP: uvicorn in a thread, httpx, a real PostgreSQL."""

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from core.delivery.unsubscribe import sign_token
from db.base import utcnow
from db.engine import make_engine, make_session_factory
from db.models import (
    Campaign,
    CampaignLead,
    EmailSend,
    EngagementEvent,
    Lead,
    Suppression,
)
from tests import factories
from web.app import create_app

SECRET = b"a test secret of more than sixteen bytes"
ADDRESS = "Sarah.Jones@Example.com"
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}
NOT_VALID = "This unsubscribe link is not valid"


@dataclass(frozen=True)
class World:
    """The rows a test looks at: one address enrolled twice, and bystanders."""

    send_a: str  # Sarah, campaign A: the send whose link is used
    send_b: str  # Sarah, campaign B
    bystander_send: str  # another lead of the same workspace
    other_workspace_send: str  # the same address in another workspace
    enrolments: tuple[str, str]  # Sarah's, in A and B
    bystander_enrolment: str
    other_workspace_enrolment: str


def add_send(session: Session, campaign: Campaign, lead: Lead) -> EmailSend:
    return factories.scheduled_send(
        session, campaign, lead, scheduled_for=utcnow() + timedelta(hours=1)
    )


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> World:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        campaign_a = factories.campaign(session, ws, name="A")
        campaign_b = factories.campaign(session, ws, name="B")
        sarah = factories.lead(session, ws, email=ADDRESS)
        bystander = factories.lead(session, ws, email="li@example.com")
        enrolment_a = factories.enrolment(session, campaign_a, sarah)
        enrolment_b = factories.enrolment(session, campaign_b, sarah)
        bystander_enrolment = factories.enrolment(session, campaign_a, bystander)

        other_ws = factories.workspace(session, name="Elsewhere")
        other_campaign = factories.campaign(session, other_ws)
        other_sarah = factories.lead(session, other_ws, email=ADDRESS)
        other_enrolment = factories.enrolment(session, other_campaign, other_sarah)

        return World(
            send_a=add_send(session, campaign_a, sarah).id,
            send_b=add_send(session, campaign_b, sarah).id,
            bystander_send=add_send(session, campaign_a, bystander).id,
            other_workspace_send=add_send(session, other_campaign, other_sarah).id,
            enrolments=(enrolment_a.id, enrolment_b.id),
            bystander_enrolment=bystander_enrolment.id,
            other_workspace_enrolment=other_enrolment.id,
        )


def snapshot(sessions: sessionmaker[Session]) -> dict[str, object]:
    """Row counts and every status the endpoint could touch, updatedAt included."""
    with sessions() as session:
        return {
            "counts": {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Suppression, EngagementEvent, CampaignLead, EmailSend, Lead)
            },
            "enrolments": sorted(
                tuple(row)
                for row in session.execute(
                    select(
                        CampaignLead.id,
                        CampaignLead.status,
                        CampaignLead.stopReason,
                        CampaignLead.nextScheduledDate,
                        CampaignLead.updatedAt,
                    )
                )
            ),
            "sends": sorted(
                tuple(row)
                for row in session.execute(
                    select(
                        EmailSend.id, EmailSend.status, EmailSend.statusReason, EmailSend.updatedAt
                    )
                )
            ),
        }


@pytest.fixture
def client(serve, sessions: sessionmaker[Session]) -> Iterator[httpx.Client]:
    with serve(create_app(sessions, SECRET)) as client:
        yield client


def one_click(client: httpx.Client, token: str) -> httpx.Response:
    """Exactly what a mailbox provider sends (RFC 8058 section 3.2), with no cookies."""
    return client.post(f"/unsubscribe/{token}", content=ONE_CLICK, headers=FORM_TYPE)


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged (the httpx client logs the URLs it requests, token and all)."""
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )


def assert_no_address(response: httpx.Response) -> None:
    assert ADDRESS.lower() not in response.text.lower()
    assert "set-cookie" not in response.headers


def test_get_shows_a_confirmation_form_and_changes_nothing(client, sessions, world):
    before = snapshot(sessions)
    response = client.get(f"/unsubscribe/{sign_token(SECRET, world.send_a)}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in response.text and "<button" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert_no_address(response)
    client.get(f"/unsubscribe/{sign_token(SECRET, world.send_a)}")  # a scanner, twice
    assert snapshot(sessions) == before


def test_one_click_unsubscribes_the_address_everywhere_in_its_workspace(
    client, sessions, world, caplog
):
    token = sign_token(SECRET, world.send_a)
    before = snapshot(sessions)
    with caplog.at_level(logging.INFO):
        response = one_click(client, token)
    assert response.status_code == 200, response.text
    assert "You are unsubscribed" in response.text
    assert_no_address(response)
    access_line = '"POST /unsubscribe/*** HTTP/1.1" 200'
    deadline = time.monotonic() + 5
    # uvicorn writes the access line from its own thread, at times after the client has read.
    while access_line not in server_log(caplog) and time.monotonic() < deadline:
        time.sleep(0.02)
    log = server_log(caplog)
    assert "unsubscribe via send" in log and access_line in log
    assert token not in log and ADDRESS.lower() not in log.lower()

    with sessions() as session:
        suppressions = session.scalars(select(Suppression)).all()
        assert [(s.email, s.reason) for s in suppressions] == [(ADDRESS, "unsubscribed")]
        event = session.scalars(select(EngagementEvent)).one()
        assert (event.id, event.emailSendId, event.type) == (
            f"unsubscribe:{world.send_a}",
            world.send_a,
            "unsubscribe",
        )
        assert event.eventMetadata == {"source": "one-click"}
        for enrolment_id in world.enrolments:  # campaign A and campaign B
            enrolment = session.get(CampaignLead, enrolment_id)
            assert (enrolment.status, enrolment.stopReason) == ("unsubscribed", "unsubscribed")
            assert enrolment.nextScheduledDate is None
        for send_id in (world.send_a, world.send_b):
            send = session.get(EmailSend, send_id)
            assert (send.status, send.statusReason) == ("cancelled", "unsubscribed")
        # Another lead, and the same address in another workspace, are untouched.
        for enrolment_id in (world.bystander_enrolment, world.other_workspace_enrolment):
            assert session.get(CampaignLead, enrolment_id).status == "active"
        for send_id in (world.bystander_send, world.other_workspace_send):
            assert session.get(EmailSend, send_id).status == "scheduled"
    assert snapshot(sessions) != before

    after = snapshot(sessions)
    again = one_click(client, token)
    assert again.status_code == 200
    assert snapshot(sessions) == after
    # The other send's link now only records its own event; the address is already stopped.
    assert one_click(client, sign_token(SECRET, world.send_b)).status_code == 200
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        assert session.scalar(select(func.count()).select_from(EngagementEvent)) == 2


def test_the_page_button_unsubscribes_as_a_form(client, sessions, world):
    token = sign_token(SECRET, world.send_a)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    # What a browser submits for a form without fields: an empty urlencoded body.
    response = client.post(f"/unsubscribe/{token}", content=b"", headers=FORM_TYPE)
    assert response.status_code == 200
    with sessions() as session:
        event = session.scalars(select(EngagementEvent)).one()
        assert event.eventMetadata == {"source": "form"}
        assert session.get(CampaignLead, world.enrolments[0]).status == "unsubscribed"


def test_a_multipart_one_click_counts_as_one_click(client, sessions, world):
    token = sign_token(SECRET, world.send_a)
    response = client.post(f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    with sessions() as session:
        assert session.scalars(select(EngagementEvent)).one().eventMetadata == {
            "source": "one-click"
        }


def _tampered_tokens(world: World) -> dict[str, str]:
    token_a = sign_token(SECRET, world.send_a)
    payload_a, signature_a = token_a.split(".")
    payload_b = sign_token(SECRET, world.send_b).split(".")[0]
    flipped = signature_a[:-1] + ("A" if signature_a[-1] != "A" else "B")
    return {
        "tampered signature": f"{payload_a}.{flipped}",
        "another send's payload": f"{payload_b}.{signature_a}",
        "wrong secret": sign_token(b"somebody else's secret, long enough", world.send_a),
        "garbage": "not-a-token",
        "truncated": token_a[:-5],
        "overlong": "A" * 600 + "." + signature_a,
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_links_are_refused_and_change_nothing(client, sessions, world, method):
    before = snapshot(sessions)
    for name, token in _tampered_tokens(world).items():
        response = client.request(
            method, f"/unsubscribe/{token}", content=ONE_CLICK, headers=FORM_TYPE
        )
        assert response.status_code == 400, name
        assert NOT_VALID in response.text, name
        assert "<form" not in response.text, name
        assert_no_address(response)
    assert snapshot(sessions) == before


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_valid_link_to_an_unknown_or_deleted_send_is_404(client, sessions, world, method):
    with sessions.begin() as session:
        session.execute(delete(EmailSend).where(EmailSend.id == world.bystander_send))
    before = snapshot(sessions)
    for send_id in ("no-such-send", world.bystander_send):
        response = client.request(
            method,
            f"/unsubscribe/{sign_token(SECRET, send_id)}",
            content=ONE_CLICK,
            headers=FORM_TYPE,
        )
        assert response.status_code == 404, send_id
        assert "<form" not in response.text
    assert snapshot(sessions) == before


def test_an_oversized_body_is_refused_and_changes_nothing(client, sessions, world):
    before = snapshot(sessions)
    response = client.post(
        f"/unsubscribe/{sign_token(SECRET, world.send_a)}",
        content=b"x" * 100_000,
        headers=FORM_TYPE,
    )
    assert response.status_code == 413
    assert snapshot(sessions) == before


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_an_unreachable_database_is_a_503_page_not_a_traceback(serve, caplog):
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with (
            caplog.at_level(logging.INFO),
            serve(create_app(make_session_factory(engine), SECRET)) as client,
        ):
            health = client.get("/healthz")
            token = sign_token(SECRET, "some-send")
            page = client.get(f"/unsubscribe/{token}")
            posted = one_click(client, token)
    finally:
        engine.dispose()
    assert health.status_code == 503 and health.json() == {"status": "unavailable"}
    for response in (page, posted):
        assert response.status_code == 503
        assert "Please try again" in response.text and "Traceback" not in response.text
    log = server_log(caplog)
    assert "database error (psycopg.OperationalError)" in log
    assert token not in log and "Traceback" not in log
