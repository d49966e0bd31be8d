"""A/B variants: the keyed-hash assignment, the campaign file's variants and abTest, and how a
lead's variant reaches its prompt, its cache key and its message."""

from collections import Counter

import pytest

from core.campaigns.campaign_file import CampaignFileError, parse_campaign
from core.campaigns.sending_rules import ABMetric, parse_sending_rules
from core.campaigns.variants import StepVariant, assign_variant, choose_variant, variant_point
from core.generation.generate import LeadOutcome, OutcomeKind, Prepared, message_content, prepare
from core.generation.prompt import generation_input_hash
from tests.unit.test_generation import due_lead

LEADS = [f"cl-{n:05d}" for n in range(10_000)]
WEIGHTS = {"A": 50, "B": 30, "C": 20}
VARIANTS = [StepVariant(key=key, weight=weight) for key, weight in WEIGHTS.items()]
# chi-square with 2 degrees of freedom: exceeded by chance once in 1,000 fair splits.
CHI2_2DF_P001 = 13.816


def _split(variants, step_id="step-1"):
    picks = [assign_variant(variants, step_id=step_id, campaign_lead_id=lead) for lead in LEADS]
    return [pick.key if pick else None for pick in picks]


def test_ten_thousand_leads_split_by_weight_within_sampling_error():
    counts = Counter(_split(VARIANTS))
    total = sum(WEIGHTS.values())
    expected = {key: len(LEADS) * weight / total for key, weight in WEIGHTS.items()}
    chi2 = sum((counts[key] - expected[key]) ** 2 / expected[key] for key in WEIGHTS)
    assert set(counts) == set(WEIGHTS)
    assert chi2 < CHI2_2DF_P001, (counts, chi2)


def test_the_split_is_identical_on_a_rerun_and_across_processes():
    assert _split(VARIANTS) == _split(list(reversed(VARIANTS)))
    # Pinned digits: HMAC-SHA256 keyed by the step id, so another process (or Python) agrees.
    assert variant_point("step-1", "cl-00000") == 0xB0AED1305B2A7040 >> 11


def test_steps_assign_independently():
    same = sum(a == b for a, b in zip(_split(VARIANTS), _split(VARIANTS, "step-2"), strict=True))
    # Independent 50/30/20 splits agree on 0.25 + 0.09 + 0.04 = 38% of leads.
    assert 3_500 < same < 4_100


def test_a_weight_of_zero_turns_a_variant_off_and_all_zero_is_the_step_itself():
    off = [StepVariant(key="A", weight=0), StepVariant(key="B", weight=3)]
    assert set(_split(off)) == {"B"}
    assert set(_split([StepVariant(key="A", weight=0)])) == {None}
    assert assign_variant([], step_id="s", campaign_lead_id="cl") is None


def test_the_pinned_variant_then_the_winner_come_before_the_hash():
    hashed = assign_variant(VARIANTS, step_id="s", campaign_lead_id="cl")
    assert hashed is not None
    other = next(v.key for v in VARIANTS if v.key != hashed.key)
    choose = {"step_id": "s", "campaign_lead_id": "cl"}
    assert choose_variant(VARIANTS, **choose, winner=other).key == other
    assert choose_variant(VARIANTS, **choose, winner=other, pinned=hashed.key).key == hashed.key
    # A key the step no longer has falls through.
    assert choose_variant(VARIANTS, **choose, winner="Z", pinned="Y").key == hashed.key


def _campaign(variants, **step):
    return {
        "workspace": {"id": "w1", "name": "W"},
        "name": "Q4",
        "steps": [
            {"stepOrder": 1, "subjectTemplate": "Hi", "bodyTemplate": "b1"},
            {
                "stepOrder": 2,
                "subjectTemplate": "{{firstName}}, quick question",
                "bodyTemplate": "b2",
                "variants": variants,
                **step,
            },
        ],
    }


def test_the_campaign_file_takes_variants_per_step_in_key_order():
    spec = parse_campaign(
        _campaign(
            [
                {"key": "B", "weight": 50, "subjectTemplate": "A faster way for {{companyName}}?"},
                {"key": "A", "weight": 50},
            ]
        )
    )
    assert spec.steps[0].variants == []
    b = spec.steps[1].variants[1]
    assert [v.key for v in spec.steps[1].variants] == ["A", "B"]
    assert (b.weight, b.subjectTemplate, b.bodyTemplate) == (
        50,
        "A faster way for {{companyName}}?",
        None,
    )


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (
            [{"key": "A"}, {"key": "A"}],
            "steps.1.variants: Value error, step 2: variant keys must be unique; repeated: A",
        ),
        (
            [{"key": "A", "weight": 0}],
            "steps.1.variants: Value error, step 2: at least one variant needs a weight above 0",
        ),
        ([{"key": "a"}], "steps.1.variants.0.key: String should match pattern"),
        ([{"key": "A", "weight": -1}], "steps.1.variants.0.weight: Input should be greater"),
        ([{"key": "A", "subjectTemplate": "{{nope}}"}], "steps.1.variants.0.subjectTemplate:"),
        ([{"key": "A", "bodyTemplate": "  "}], "steps.1.variants.0.bodyTemplate:"),
        ([{"key": "A", "colour": "red"}], "steps.1.variants.0.colour: Extra inputs"),
    ],
)
def test_bad_variants_are_refused_naming_the_step_and_field(variants, expected):
    with pytest.raises(CampaignFileError) as caught:
        parse_campaign(_campaign(variants))
    assert any(problem.startswith(expected) for problem in caught.value.problems), (
        caught.value.problems
    )


def test_ab_test_rules_default_off_and_validate():
    rules = parse_sending_rules({})
    assert not rules.ab_test.auto_select and rules.ab_test.level == 0.05
    rules = parse_sending_rules(
        {"abTest": {"autoSelect": True, "minSendsPerVariant": 300, "metric": "reply_rate"}}
    )
    assert rules.ab_test.min_sends_per_variant == 300
    assert rules.ab_test.metric is ABMetric.reply_rate
    with pytest.raises(ValueError, match="level"):
        parse_sending_rules({"abTest": {"level": 0.9}})


def _variant_lead(campaign_lead_id="cl1", **overrides):
    variants = (
        StepVariant(key="A", weight=1),
        StepVariant(
            key="B",
            weight=1,
            subjectTemplate="A faster way for {{companyName}}?",
            aiInstructions="Be bold",
        ),
    )
    return due_lead(campaignLeadId=campaign_lead_id, variants=variants, **overrides)


def _lead_in(key):
    return next(
        lead
        for lead in (_variant_lead(f"cl{n}") for n in range(50))
        if lead.in_variant().variantKey == key
    )


def test_a_lead_is_prepared_in_its_variant_with_its_overrides():
    prepared = prepare(_lead_in("B"), model="gpt-4o-mini")
    assert isinstance(prepared, Prepared)
    assert prepared.lead.variantKey == "B"
    assert prepared.rendered.subject == "A faster way for Acme?"
    assert "Be bold" in prepared.messages()[0]["content"]
    # The body is the step's own: the variant did not override it.
    assert prepared.rendered.body.startswith("Hello Sarah")
    a = prepare(_lead_in("A"), model="gpt-4o-mini")
    assert isinstance(a, Prepared)
    assert (a.lead.variantKey, a.rendered.subject) == ("A", "Hi Sarah")
    assert "Be brief" in a.messages()[0]["content"]


def test_the_cache_key_holds_the_variant_but_a_step_without_variants_keeps_its_key():
    plain = prepare(due_lead(), model="m")
    a = prepare(_lead_in("A"), model="m")
    assert isinstance(plain, Prepared) and isinstance(a, Prepared)
    # A has no overrides: the same text as the step, yet another message of the test.
    assert a.input_hash != plain.input_hash
    inputs = {
        "lead_profile": {"firstName": "Sarah"},
        "subject_template": "s",
        "body_template": "b",
        "ai_instructions": None,
        "goal": None,
        "sender_name": None,
        "link_allowlist": [],
        "model": "m",
    }
    assert generation_input_hash(**inputs) == generation_input_hash(**inputs, variant_key=None)
    assert generation_input_hash(**inputs) != generation_input_hash(**inputs, variant_key="A")


def test_a_pinned_variant_is_kept_whatever_the_hash_or_the_winner_say():
    lead = _lead_in("A")
    pinned = lead.model_copy(update={"variantKey": "B", "variantWinner": "A"})
    assert pinned.in_variant().variantKey == "B"
    assert lead.model_copy(update={"variantWinner": "B"}).in_variant().variantKey == "B"


def test_the_message_records_its_variant():
    draft = prepare(_lead_in("B"), model="m")
    assert isinstance(draft, Prepared)
    outcome = LeadOutcome("cl", OutcomeKind.fallback, reason="r", variant_key="B")
    assert message_content(outcome, draft.rendered).variantKey == "B"
