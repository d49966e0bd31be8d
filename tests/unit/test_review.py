"""Review before send as plain functions: the rule in sendingRules, which messages wait for a
person, what generation plans for them, what an approved text becomes, and what a backfill
may replace."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from core.campaigns.sending_rules import describe_errors, parse_sending_rules
from core.generation.approval import ApprovedMessage, Release, SendBack, judge_approved
from core.generation.generate import LeadOutcome, OutcomeKind, plan_writes
from core.generation.launch_review import decision_markdown, sample_markdown
from core.generation.llm import Generation
from core.generation.regeneration import StepSend, plan_rewrites
from core.generation.review import first_reviewed_steps, review_reason, rewrite_review
from core.statuses import CampaignStatus, GeneratedMessageStatus
from tests.unit.test_generation import AS_OF, GOOD, due_lead

ALL = parse_sending_rules({"review": "all"})
FIRST_2 = parse_sending_rules({"review": "first", "reviewCount": 2})
NONE = parse_sending_rules({})


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"review": "first"}, "review: Value error, review: first needs reviewCount"),
        ({"review": "all", "reviewCount": 3}, "reviewCount applies only to review: first"),
        ({"reviewCount": 3}, "review: Value error, reviewCount applies only"),
        ({"review": "sometimes"}, "review: Input should be 'none', 'all' or 'first'"),
        ({"review": "first", "reviewCount": 0}, "reviewCount: Input should be greater than"),
    ],
)
def test_review_rules_that_do_not_fit_together_name_the_field(raw, problem):
    with pytest.raises(ValidationError) as caught:
        parse_sending_rules(raw)
    (line,) = describe_errors(caught.value)
    assert problem in line


def test_the_review_rule_defaults_to_none():
    assert (NONE.review, NONE.review_count) == ("none", None)
    assert FIRST_2.review_count == 2


@pytest.mark.parametrize(
    ("rules", "earlier", "fallback", "flagged", "reason"),
    [
        (NONE, 0, "LLM: HTTP 400", "a link", None),
        (ALL, 50, None, None, "every message is reviewed (review: all)"),
        (FIRST_2, 1, None, None, "one of the first 2 messages of its step (review: first)"),
        (FIRST_2, 2, None, None, None),
        (FIRST_2, 2, "LLM: HTTP 400", None, "the template was used instead of the LLM's draft"),
        (FIRST_2, 9, None, "links to x.example", "the quality gate flagged the first draft"),
    ],
)
def test_which_new_messages_wait_for_a_person(rules, earlier, fallback, flagged, reason):
    found = review_reason(rules, earlier=earlier, fallback=fallback, flagged=flagged)
    assert found == reason if reason is None else reason in found


def test_only_review_first_steps_are_counted_and_bad_rules_are_left_to_the_hold():
    leads = [
        due_lead(stepId="s1", sendingRules={"review": "first", "reviewCount": 3}),
        due_lead(stepId="s2", sendingRules={"review": "all"}),
        due_lead(stepId="s3", sendingRules={"review": "first"}),  # invalid: held by prepare
        due_lead(stepId=None, sendingRules={"review": "first", "reviewCount": 1}),
    ]
    assert first_reviewed_steps(leads) == {"s1": 3}


def outcome(campaign_lead_id: str, kind: OutcomeKind = OutcomeKind.generated, **fields):
    return LeadOutcome(
        campaign_lead_id,
        kind,
        draft=GOOD,
        generation=Generation(GOOD, "gpt-x", 10, 5, 3, 0.25, 1),
        input_hash="h",
        **fields,
    )


def test_a_message_awaiting_review_gets_no_slot_and_its_lead_no_next_date():
    rules = {"timezone": "America/New_York", "review": "first", "reviewCount": 2}
    leads = [due_lead(campaignLeadId=f"cl{i}", sendingRules=rules) for i in range(4)]
    outcomes = [outcome(f"cl{i}") for i in range(3)]
    outcomes.append(outcome("cl3", OutcomeKind.fallback, reason="LLM: HTTP 400"))

    writes, holds = plan_writes(
        leads, outcomes, as_of=AS_OF, max_attempts=8, step_messages={"s1": 1}
    )

    assert holds == []
    # One of the step's messages was written before this batch: cl0 is its second, cl1 its third.
    statuses = [(w.status, w.scheduledFor is None) for w in writes]
    assert statuses == [
        (GeneratedMessageStatus.pending_review, True),
        (GeneratedMessageStatus.generated, False),
        (GeneratedMessageStatus.generated, False),
        (GeneratedMessageStatus.pending_review, True),
    ]
    waiting, released = writes[0], writes[1]
    assert "first 2 messages" in waiting.reviewReason
    assert (waiting.nextStepOrder, waiting.nextScheduledDate, waiting.completed) == (1, None, False)
    assert (released.scheduledFor, released.nextStepOrder) == (AS_OF, 2)
    assert released.reviewReason is None
    assert "the template was used instead" in writes[3].reviewReason


def approved(subject: str = GOOD.subject, body: str = GOOD.body, **lead) -> ApprovedMessage:
    return ApprovedMessage(
        sendId="send1", messageId="m1", subject=subject, body=body, lead=due_lead(**lead)
    )


def test_an_approved_text_that_passes_the_gate_gets_the_slot_generation_would_give():
    verdict = judge_approved(
        approved(subject="  Hi Sarah ", body="Hello Sarah,\r\n\r\nEdited by hand.\r\n"),
        as_of=AS_OF,
        model="m",
    )
    assert isinstance(verdict, Release)
    assert (verdict.subject, verdict.body) == ("Hi Sarah", "Hello Sarah,\n\nEdited by hand.")
    assert verdict.seenSubject == "  Hi Sarah "  # what the write checks is still the text
    assert (verdict.scheduledFor, verdict.nextStepOrder) == (AS_OF, 2)
    assert verdict.nextScheduledDate == AS_OF + timedelta(days=3)
    assert verdict.completed is False
    last = judge_approved(approved(nextStepDelayDays=None), as_of=AS_OF, model="m")
    assert isinstance(last, Release) and last.completed and last.nextScheduledDate is None


@pytest.mark.parametrize(
    ("text", "lead", "problem"),
    [
        (
            {"body": "See https://evil.example"},
            {},
            "the approved text fails the quality gate: links",
        ),
        ({"subject": "Hi\nBcc: x@evil.example"}, {}, "subject must be one line"),
        ({"body": "Hi {{firstName}}"}, {}, "unresolved {{placeholder}}"),
        ({}, {"companyName": None}, "cannot be checked: template: body: {{companyName}}"),
    ],
)
def test_an_approved_text_the_gate_refuses_goes_back_with_the_reasons(text, lead, problem):
    verdict = judge_approved(approved(**text, **lead), as_of=AS_OF, model="m")
    assert isinstance(verdict, SendBack)
    assert problem in verdict.reason
    assert (verdict.sendId, verdict.messageId, verdict.stepOrder) == ("send1", "m1", 1)


def test_a_backfill_rewrites_a_send_awaiting_review_as_pending_review():
    assert rewrite_review(
        NONE, awaiting=True, reviewed_before=False, fallback=None, flagged=None
    ) == ("regenerated while awaiting review")
    assert rewrite_review(
        FIRST_2, awaiting=False, reviewed_before=True, fallback=None, flagged=None
    )
    assert (
        rewrite_review(FIRST_2, awaiting=False, reviewed_before=False, fallback=None, flagged=None)
        is None
    )
    assert (
        rewrite_review(NONE, awaiting=False, reviewed_before=True, fallback="x", flagged="y")
        is None
    )


def step_send(send_id: str, *, scheduled: bool, status: str, rules: dict) -> StepSend:
    return StepSend(
        sendId=send_id,
        scheduledFor=AS_OF if scheduled else None,
        currentMessageStatus=status,
        lead=due_lead(campaignLeadId=send_id, sendingRules=rules),
    )


def test_a_backfill_never_takes_a_released_send_back_into_review():
    rules = {"review": "all"}
    sends = [
        step_send("awaiting", scheduled=False, status="rejected", rules=rules),
        step_send("released", scheduled=True, status="approved", rules=rules),
        step_send("no-review", scheduled=True, status="generated", rules={}),
    ]
    rewrites, kept = plan_rewrites(sends, [outcome(s.sendId) for s in sends])

    assert [(r.sendId, r.status) for r in rewrites] == [
        ("awaiting", GeneratedMessageStatus.pending_review),
        ("no-review", GeneratedMessageStatus.generated),
    ]
    assert rewrites[0].reviewReason == "regenerated while awaiting review"
    (released,) = kept
    assert released.sendId == "released" and released.for_review
    assert "the new draft would need review" in released.reason


@pytest.mark.parametrize(
    ("approved", "before", "after", "says"),
    [
        (True, "draft", "active", "Approved: the campaign is now active (it was draft)."),
        (True, "paused", "active", "Approved: the campaign is now active (it was paused)."),
        (True, "active", "active", "Approved: the campaign was already active."),
        (
            True,
            "archived",
            "archived",
            "Approved, but the campaign is archived, which no launch changes",
        ),
        (False, "draft", "draft", "Rejected: the campaign was left draft."),
    ],
)
def test_the_launch_decision_says_what_it_did(approved, before, after, says):
    markdown = decision_markdown(
        "c1",
        approved=approved,
        note="Step 1 reads\nwell",
        before=CampaignStatus(before),
        after=CampaignStatus(after),
    )
    assert says in markdown and "> Step 1 reads\n> well" in markdown


def test_the_sample_shows_each_draft_and_why_but_no_address():
    leads = [due_lead(campaignLeadId="cl1"), due_lead(campaignLeadId="cl2")]
    outcomes = [
        outcome("cl1"),
        LeadOutcome("cl2", OutcomeKind.held, reason="template: body: {{companyName}} has no value"),
    ]
    markdown = sample_markdown("c1", 1, leads, outcomes)
    assert "2 sample drafts" in markdown and "1 written by the LLM" in markdown
    assert "## Enrolment `cl1`: generated" in markdown
    assert f"**Subject:** {GOOD.subject}" in markdown and "> Hello Sarah" in markdown
    assert "Why: template: body: {{companyName}} has no value" in markdown
    assert "sarah@acme.example" not in markdown
