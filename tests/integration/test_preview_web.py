"""The preview endpoint over real HTTP: uvicorn, a real PostgreSQL, and the LLM through the
official `openai` client to the fake OpenAI server, with the flows' result storage as the cache.

A preview must answer what a run would do and what it cost; it must write nothing to the
database; and a request without the right token must change nothing and cost nothing.
"""

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from core.generation.config import GenerationConfig
from core.generation.generate import GenerationCache
from core.generation.llm import TEMPLATE_MODEL
from core.generation.prompt import PROMPT_VERSION
from db.engine import make_engine, make_session_factory
from tasks.generation import cache_outside_runs
from tests import factories
from tests.support.fake_openai import FakeOpenAI
from tests.support.openai_wire import PERSONAL_LINE, default_responder
from web.app import create_app
from web.preview import MAX_PREVIEW_BODY_BYTES, PreviewAccess

SECRET = b"a test secret of more than sixteen bytes"
TOKEN = "preview-api-token-0123456789abcdef"
KEY = "sk-preview-sentinel-KEY-0123456789"
ADDRESS = "sarah.preview@buyer.example"
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_llm(llm: FakeOpenAI) -> None:
    llm.reset()
    llm.set_responder(None)


@dataclass(frozen=True)
class World:
    campaign_id: str
    lead_id: str
    other_workspace_lead_id: str


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> World:
    with sessions.begin() as session:
        ws = factories.workspace(session)
        campaign = factories.campaign(session, ws, goal="Book calls")
        lead = factories.lead(session, ws, email=ADDRESS)
        factories.enrolment(session, campaign, lead)
        elsewhere = factories.lead(session, factories.workspace(session, name="Other"))
        return World(campaign.id, lead.id, elsewhere.id)


@pytest.fixture
def results(tmp_path: Path) -> Iterator[Path]:
    """Where the flows' result storage is for this test (no Prefect API: the local path)."""
    path = tmp_path / "results"
    with temporary_settings(
        updates={PREFECT_LOCAL_STORAGE_PATH: str(path)}, restore_defaults={PREFECT_API_URL}
    ):
        yield path


@pytest.fixture
def flow_cache(results: Path) -> Callable[[], GenerationCache]:
    return asyncio.run(cache_outside_runs())


def online(llm: FakeOpenAI) -> GenerationConfig:
    return GenerationConfig(
        model=MODEL, api_key=SecretStr(KEY), base_url=llm.base_url, max_retries=0
    )


@pytest.fixture
def make_client(serve, sessions, llm, flow_cache) -> Iterator[Callable[..., httpx.Client]]:
    """`make_client(**changes)`: the app serving previews so configured (`served=False`: not)."""
    with ExitStack() as stack:

        def make(*, served: bool = True, **changes: Any) -> httpx.Client:
            preview = None
            if served:
                settings = {
                    "token": SecretStr(TOKEN),
                    "per_minute": 100,
                    "generation": online(llm),
                    "cache": flow_cache,
                    **changes,
                }
                preview = PreviewAccess(**settings)
            return stack.enter_context(serve(create_app(sessions, SECRET, preview=preview)))

        yield make


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(
    client: httpx.Client,
    campaign_id: str,
    body: Any,
    *,
    step: int | str = 1,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return client.post(
        f"/campaigns/{campaign_id}/steps/{step}/preview",
        json=body,
        headers=AUTH if headers is None else headers,
    )


def database_rows(sessions: sessionmaker[Session]) -> dict[str, list[str]]:
    """Every row of every table, as JSON text: equal before and after means nothing changed."""
    with sessions() as session:
        tables = session.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).all()
        return {
            table: sorted(session.scalars(text(f'SELECT to_jsonb(t)::text FROM "{table}" t')))
            for table in tables
        }


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore", "openai"))
    )


def stored_results(results: Path) -> list[Path]:
    return sorted(path for path in results.rglob("*") if path.is_file())


def test_a_preview_answers_the_template_the_draft_the_verdict_and_the_cost(
    make_client, sessions, world, llm, results, caplog
):
    client = make_client()
    before = database_rows(sessions)
    with caplog.at_level(logging.INFO):
        response = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["rendered"] == {
        "subject": "Step 1 for Sarah",
        "body": "Hi Sarah, step 1 about Acme Corp.",
    }
    assert answer["draft"] == {
        "subject": "Step 1 for Sarah",
        "body": f"{PERSONAL_LINE}\n\nHi Sarah, step 1 about Acme Corp.",
    }
    assert answer["gate"] == {"passed": True, "reasons": []}
    assert (answer["outcome"], answer["reason"]) == ("generated", None)
    assert (answer["campaignId"], answer["stepOrder"], answer["leadId"]) == (
        world.campaign_id,
        1,
        world.lead_id,
    )
    assert (answer["model"], answer["promptVersion"]) == (MODEL, PROMPT_VERSION)
    assert answer["offline"] is False and answer["cacheHit"] is False
    assert answer["promptTokens"] > 0 and answer["completionTokens"] > 0
    assert answer["costUsd"] > 0
    assert answer["spent"] == {
        "llmCalls": 1,
        "promptTokens": answer["promptTokens"],
        "completionTokens": answer["completionTokens"],
        "costUsd": answer["costUsd"],
    }
    assert llm.stats().requests == 1
    [request] = llm.request_log()
    assert request.body["model"] == MODEL
    # The same prompt a run sends: the step's instructions and the campaign's goal, no address.
    prompt = "\n".join(message["content"] for message in request.body["messages"])
    assert "Instructions for step 1" in prompt and "Book calls" in prompt
    assert ADDRESS not in prompt
    assert database_rows(sessions) == before  # a preview is not a send
    assert stored_results(results)  # the draft is kept where the flows keep theirs

    # The same preview again is answered from the cache: the same draft, no new LLM call.
    with caplog.at_level(logging.INFO):
        again = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert again.status_code == 200, again.text
    cached = again.json()
    assert cached["cacheHit"] is True and llm.stats().requests == 1
    assert cached["spent"] == {
        "llmCalls": 0,
        "promptTokens": 0,
        "completionTokens": 0,
        "costUsd": 0.0,
    }
    assert {key: value for key, value in cached.items() if key not in ("cacheHit", "spent")} == {
        key: value for key, value in answer.items() if key not in ("cacheHit", "spent")
    }
    assert database_rows(sessions) == before

    log = server_log(caplog)
    assert (
        f"preview of campaign {world.campaign_id} step 1 for lead {world.lead_id}: generated,"
        f" model {MODEL}, generated; spent 1 LLM calls" in log
    )
    assert f"model {MODEL}, cache hit; spent 0 LLM calls, 0 prompt + 0 completion tokens" in log
    for secret in (ADDRESS, TOKEN, KEY, PERSONAL_LINE):
        assert secret not in log


def test_an_inline_lead_is_previewed_without_a_lead_row(make_client, sessions, world, llm):
    client = make_client()
    before = database_rows(sessions)
    lead = {
        "email": "new.person@prospect.example",
        "firstName": "Bob",
        "companyName": "Initech",
        "customFields": {"plan": "pro"},
    }
    response = post(client, world.campaign_id, {"lead": lead}, step=2)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["rendered"] == {
        "subject": "Step 2 for Bob",
        "body": "Hi Bob, step 2 about Initech.",
    }
    assert answer["leadId"] is None and answer["stepOrder"] == 2
    assert answer["draft"]["body"].startswith(PERSONAL_LINE)
    assert '"customFields.plan": "pro"' in llm.request_log()[0].body["messages"][1]["content"]
    assert database_rows(sessions) == before


def test_the_gate_verdict_and_its_reasons_come_back_with_the_fallback(
    make_client, sessions, world, llm
):
    def adds_a_link(request: dict[str, Any]) -> dict[str, Any]:
        draft = default_responder(request)
        return {**draft, "body": draft["body"] + "\n\nBook here: https://evil.example/book"}

    llm.set_responder(adds_a_link)
    client = make_client()
    response = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["gate"]["passed"] is False
    [reason] = answer["gate"]["reasons"]
    assert "evil.example" in reason
    assert "https://evil.example/book" in answer["draft"]["body"]
    # The campaign's default policy: the rendered template is what a run would send.
    assert answer["outcome"] == "fallback"
    assert answer["reason"] == f"quality gate: {reason}"
    assert answer["spent"]["llmCalls"] == 2 and llm.stats().requests == 2  # one retry
    assert answer["spent"]["costUsd"] > answer["costUsd"] > 0  # two calls paid, one draft shown


def test_offline_the_template_generator_answers_free(make_client, sessions, world, llm):
    client = make_client(generation=GenerationConfig(model=TEMPLATE_MODEL))
    response = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["offline"] is True and answer["model"] == TEMPLATE_MODEL
    assert answer["draft"] == answer["rendered"]
    assert answer["gate"] == {"passed": True, "reasons": []}
    assert answer["costUsd"] == 0 and answer["spent"]["llmCalls"] == 0
    assert llm.stats().requests == 0


def test_a_model_with_no_price_answers_an_unknown_cost_not_a_free_one(
    make_client, world, llm, caplog
):
    unpriced = online(llm).model_copy(update={"model": "gpt-9-turbo"})
    client = make_client(generation=unpriced)
    with caplog.at_level(logging.INFO):
        response = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outcome"] == "generated" and answer["promptTokens"] > 0
    assert answer["costUsd"] is None
    assert answer["spent"]["llmCalls"] == 1 and answer["spent"]["costUsd"] is None
    assert "cost unknown (no price)" in server_log(caplog)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "shorter", "basic", "no-scheme"],
)
def test_a_missing_or_wrong_token_changes_nothing_and_costs_nothing(
    make_client, sessions, world, llm, results, caplog, headers
):
    client = make_client()
    before = database_rows(sessions)
    with caplog.at_level(logging.INFO):
        for body in ({"leadId": world.lead_id}, {"lead": {"email": "x@y.example"}}, "junk"):
            response = post(client, world.campaign_id, body, headers=headers)
            assert response.status_code == 401, response.text
            assert response.json() == {"error": "missing or wrong bearer token"}
            assert response.headers["www-authenticate"] == 'Bearer realm="preview"'
    assert llm.stats().requests == 0
    assert database_rows(sessions) == before
    assert stored_results(results) == []
    log = server_log(caplog)
    assert "preview refused: missing or wrong bearer token" in log
    assert TOKEN not in log


def test_without_a_token_configured_the_endpoint_answers_404(make_client, world, llm):
    client = make_client(served=False)
    response = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert response.status_code == 404
    assert response.json() == {"error": "preview not configured"}
    assert llm.stats().requests == 0


def test_previews_are_rate_limited_per_token(make_client, world, llm):
    client = make_client(per_minute=2)
    for name in ("Ann", "Bob"):
        lead = {"email": f"{name.lower()}@prospect.example", "firstName": name}
        response = post(client, world.campaign_id, {"lead": {**lead, "companyName": "Initech"}})
        assert response.status_code == 200, response.text
    refused = post(client, world.campaign_id, {"leadId": world.lead_id})
    assert refused.status_code == 429
    assert refused.json() == {"error": "at most 2 previews a minute; try again in 60 s"}
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert llm.stats().requests == 2
    # The limit counts requests with the right token only: a wrong one is still a 401.
    wrong = {"Authorization": "Bearer another-token-0123456789abcdef"}
    assert post(client, world.campaign_id, {}, headers=wrong).status_code == 401


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"lead": {"email": "nope"}}, r"^lead\.email: Value error, 'nope' is not a valid address"),
        ({"lead": {"firstName": "Ann"}}, r"^lead\.email: Field required$"),
        ({"lead": {"email": "a@b.example", "timezone": "Mars/Base"}}, r"^lead\.timezone: "),
        ({"lead": {"email": "a@b.example", "nick": "A"}}, r"^lead\.nick: Extra inputs"),
        ({"lead": {"email": "a@b.example", "customFields": {"x": [1]}}}, r"^lead\.customFields"),
        ({}, r"^\(root\): Value error, give either leadId or lead"),
        ("not json at all", r"^\(root\): Invalid JSON"),
    ],
)
def test_a_bad_body_is_422_naming_the_field(make_client, sessions, world, llm, body, problem):
    client = make_client()
    before = database_rows(sessions)
    if isinstance(body, str):
        response = client.post(
            f"/campaigns/{world.campaign_id}/steps/1/preview", content=body, headers=AUTH
        )
    else:
        response = post(client, world.campaign_id, body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "invalid request"
    assert any(re.search(problem, line) for line in answer["problems"]), answer
    assert llm.stats().requests == 0
    assert database_rows(sessions) == before


def test_unknown_campaign_step_or_lead_is_404_saying_which(make_client, world, llm):
    client = make_client()
    by_id = {"leadId": world.lead_id}
    cases = [
        (post(client, "no-such-campaign", by_id), "no campaign with id 'no-such-campaign'"),
        (
            post(client, world.campaign_id, by_id, step=9),
            f"campaign {world.campaign_id} has no step with stepOrder 9 (its steps: 1, 2, 3)",
        ),
        (
            post(client, world.campaign_id, by_id, step="first"),
            "no step 'first': stepOrder is a whole number",
        ),
        (
            post(client, world.campaign_id, by_id, step=2**31),
            f"no step '{2**31}': stepOrder is a whole number",
        ),
        (
            post(client, world.campaign_id, {"leadId": "bad\u0000id"}),
            "no such campaign or lead",
        ),
        (post(client, "bad%00id", by_id), "no such campaign or lead"),  # a NUL in the path
        (
            post(client, world.campaign_id, {"leadId": "no-such-lead"}),
            f"no lead with id 'no-such-lead' in the workspace of campaign {world.campaign_id}",
        ),
        (
            # A lead of another workspace is not this campaign's to preview.
            post(client, world.campaign_id, {"leadId": world.other_workspace_lead_id}),
            f"no lead with id '{world.other_workspace_lead_id}' in the workspace of campaign",
        ),
    ]
    for response, message in cases:
        assert response.status_code == 404, response.text
        assert response.json()["error"].startswith(message)
    assert llm.stats().requests == 0


def test_an_oversized_body_is_413_and_costs_nothing(make_client, world, llm):
    client = make_client()
    note = "x" * MAX_PREVIEW_BODY_BYTES
    response = post(client, world.campaign_id, {"lead": {"email": "a@b.example", "note": note}})
    assert response.status_code == 413
    assert llm.stats().requests == 0


def test_an_unreachable_database_is_a_json_503_and_costs_nothing(serve, llm, caplog):
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    preview = PreviewAccess(token=SecretStr(TOKEN), per_minute=5, generation=online(llm))
    try:
        with (
            caplog.at_level(logging.INFO),
            serve(create_app(make_session_factory(engine), SECRET, preview=preview)) as client,
        ):
            response = post(client, "camp-1", {"leadId": "lead-1"})
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"error": "database unavailable"}
    assert llm.stats().requests == 0
    assert "Traceback" not in server_log(caplog)
