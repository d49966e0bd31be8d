"""The preview's parts without I/O: the request body, the offline answer, the token, the limit."""

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr, ValidationError

from core.campaigns.sending_rules import describe_errors
from core.generation.config import GenerationConfig
from core.generation.due_lead import DueLead
from core.generation.generate import NoCache, OutcomeKind
from core.generation.llm import TEMPLATE_MODEL
from core.generation.preview import InlineLead, PreviewRequest, preview_step
from core.settings import Settings
from web.preview import PreviewAccess
from web.rate_limit import SlidingWindowLimit

TOKEN = "preview-token-of-some-length"
OFFLINE = GenerationConfig(model=TEMPLATE_MODEL)


def problems(body: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        PreviewRequest.model_validate_json(body)
    return describe_errors(caught.value)


def test_an_inline_lead_is_checked_like_a_leads_file_row():
    request = PreviewRequest.model_validate_json(
        '{"lead": {"email": " Ann@Example.COM ", "firstName": "Ann", "timezone": "Europe/Paris",'
        ' "customFields": {"plan": "pro", "seats": 12}}}'
    )
    assert request.lead == InlineLead(
        email="Ann@example.com",
        firstName="Ann",
        timezone="Europe/Paris",
        customFields={"plan": "pro", "seats": 12},
    )
    assert request.leadId is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"lead": {"email": "not-an-address"}}', "lead.email: "),
        ('{"lead": {"firstName": "Ann"}}', "lead.email: Field required"),
        ('{"lead": {"email": "a@b.io", "timezone": "Mars/Olympus"}}', "lead.timezone: "),
        ('{"lead": {"email": "a@b.io", "nickname": "A"}}', "lead.nickname: Extra inputs"),
        ('{"lead": {"email": "a@b.io", "customFields": {"note": {"x": 1}}}}', "lead.customFields"),
        ('{"leadId": ""}', "leadId: "),
        ('{"leadId": "l1", "colour": "red"}', "colour: Extra inputs"),
        ("{}", "(root): Value error, give either leadId or lead"),
        ('{"leadId": "l1", "lead": {"email": "a@b.io"}}', "(root): Value error, give either"),
        ("not json", "(root): Invalid JSON"),
    ],
)
def test_a_bad_request_names_the_field(body, field):
    found = problems(body)
    assert any(line.startswith(field) for line in found), found


def test_the_address_problem_says_what_is_wrong():
    [line] = problems('{"lead": {"email": "ann@"}}')
    assert "'ann@' is not a valid address" in line


def due_lead(**overrides) -> DueLead:
    fields = {
        "campaignLeadId": "",
        "campaignId": "c1",
        "leadId": "l1",
        "workspaceId": "w1",
        "stepOrder": 2,
        "nextScheduledDate": datetime(2026, 11, 25, tzinfo=UTC),
        "attempts": 0,
        "email": "sarah@acme.example",
        "firstName": "Sarah",
        "companyName": "Acme",
        "goal": "Book calls",
        "sendingRules": {"fromName": "Alex"},
        "stepId": "s2",
        "subjectTemplate": "Hi {{firstName|there}}",
        "bodyTemplate": "Hello {{firstName}}, a note for {{companyName}}.\n\n{{senderName}}",
        "aiInstructions": "Be brief",
    }
    return DueLead(**{**fields, **overrides})


def test_offline_the_rendered_template_is_the_draft_and_costs_nothing():
    preview = asyncio.run(preview_step(due_lead(), OFFLINE, NoCache()))
    assert preview.offline and preview.model == TEMPLATE_MODEL
    assert preview.rendered is not None and preview.rendered == preview.draft
    assert preview.rendered.subject == "Hi Sarah"
    assert preview.rendered.body == "Hello Sarah, a note for Acme.\n\nAlex"
    assert preview.gate is not None and preview.gate.passed and preview.gate.reasons == []
    assert preview.outcome is OutcomeKind.generated and preview.reason is None
    assert (preview.campaignId, preview.stepOrder, preview.leadId) == ("c1", 2, "l1")
    assert preview.inputHash and not preview.cacheHit
    assert (preview.promptTokens, preview.completionTokens, preview.costUsd) == (0, 0, 0.0)
    assert preview.spent.model_dump() == {
        "llmCalls": 0,
        "promptTokens": 0,
        "completionTokens": 0,
        "costUsd": 0.0,
    }


def test_a_lead_the_template_cannot_render_is_held_with_the_variable_named():
    preview = asyncio.run(preview_step(due_lead(companyName=None, leadId=""), OFFLINE, NoCache()))
    assert preview.outcome is OutcomeKind.held
    assert preview.reason is not None and "companyName" in preview.reason
    assert preview.rendered is None and preview.draft is None and preview.gate is None
    assert preview.leadId is None  # an inline lead has no id


def access(**changes) -> PreviewAccess:
    return PreviewAccess(
        **{"token": SecretStr(TOKEN), "per_minute": 5, "generation": OFFLINE, **changes}
    )


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        ("", False),
        (None, False),
    ],
)
def test_only_the_token_as_a_bearer_credential_is_authorised(header, allowed):
    assert access().authorised(header) is allowed


def test_a_short_token_is_refused_before_serving():
    with pytest.raises(ValueError, match="PIPELINE_API_TOKEN must be at least 16 characters"):
        access(token=SecretStr("short"))


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_token_previews_are_not_served(token):
    settings = Settings(_env_file=None, pipeline_api_token=token)
    assert PreviewAccess.from_settings(settings) is None


def test_the_settings_give_the_token_the_rate_and_the_generation_config():
    settings = Settings(_env_file=None, pipeline_api_token=TOKEN, preview_rate_per_minute=7)
    configured = PreviewAccess.from_settings(settings)
    assert configured is not None
    assert configured.token.get_secret_value() == TOKEN and configured.per_minute == 7
    assert configured.generation == GenerationConfig.from_settings(settings)
    assert TOKEN not in configured.limit_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_allows_the_rate_in_any_minute_and_says_how_long_to_wait():
    clock = Clock()
    limit = SlidingWindowLimit(3, clock=clock)
    for _ in range(3):
        assert limit.take("a") is None
        clock.now += 10  # requests at 1000, 1010 and 1020
    assert limit.take("a") == 30  # at 1030, the first leaves the window at 1060
    assert limit.take("b") is None  # another token has its own window
    clock.now = 1060
    assert limit.take("a") is None
    clock.now = 1060.5
    assert limit.take("a") == 10  # the second leaves at 1070: 9.5 s, rounded up
    clock.now = 1070
    assert limit.take("a") is None


def test_a_refused_request_does_not_count():
    clock = Clock()
    limit = SlidingWindowLimit(1, clock=clock)
    assert limit.take("a") is None
    for _ in range(5):
        clock.now += 10
        assert limit.take("a") is not None
    clock.now += 10  # 60 s after the one allowed request
    assert limit.take("a") is None
