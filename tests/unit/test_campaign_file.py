"""The campaign file: valid files parse; bad ones are refused with every problem listed."""

from datetime import UTC, datetime, timedelta

import pytest

from core.campaigns.campaign_file import CampaignFileError, first_send_date, parse_campaign


def _doc(**overrides):
    doc = {
        "workspace": {"id": "w1", "name": "W"},
        "name": "Q4",
        "goal": "Book calls",
        "status": "active",
        "sendingRules": {"timezone": "Europe/Paris", "dailyLimit": 50},
        "steps": [
            {"stepOrder": 2, "delayDays": 3, "subjectTemplate": "Re: hi", "bodyTemplate": "b2"},
            {
                "stepOrder": 1,
                "subjectTemplate": "Hi {{firstName|there}}",
                "bodyTemplate": "b1",
                "aiInstructions": "Be brief",
            },
        ],
    }
    doc.update(overrides)
    return doc


def test_a_valid_file_parses_with_steps_in_order():
    spec = parse_campaign(_doc())
    assert [s.stepOrder for s in spec.steps] == [1, 2]
    assert spec.sendingRules.timezone == "Europe/Paris"
    assert spec.sendingRules.daily_limit == 50
    assert spec.sendingRules.window.start.hour == 9  # a default


def test_every_problem_is_listed_at_once():
    doc = _doc(
        colour="blue",
        sendingRules={"timezone": "Europe/Pariss", "dailyLimt": 5},
        steps=[
            {"stepOrder": 1, "subjectTemplate": "a", "bodyTemplate": "b"},
            {"stepOrder": 3, "subjectTemplate": "a", "bodyTemplate": "b"},
        ],
    )
    with pytest.raises(CampaignFileError) as excinfo:
        parse_campaign(doc, source="c.yaml")
    problems = excinfo.value.problems
    assert any(p.startswith("colour:") and "Extra inputs" in p for p in problems)
    assert any(p.startswith("sendingRules.timezone:") and "Europe/Pariss" in p for p in problems)
    assert any(p.startswith("sendingRules.dailyLimt:") for p in problems)
    assert any(p.startswith("steps:") and "no gap" in p for p in problems)
    assert len(problems) == 4
    assert str(excinfo.value).startswith("c.yaml: 4 problem(s)")


@pytest.mark.parametrize(
    ("orders", "ok"), [([1, 2, 3], True), ([1, 1, 2], False), ([2, 3], False), ([0, 1], False)]
)
def test_step_orders_must_be_one_to_n(orders, ok):
    steps = [{"stepOrder": o, "subjectTemplate": "s", "bodyTemplate": "b"} for o in orders]
    if ok:
        parse_campaign(_doc(steps=steps))
    else:
        with pytest.raises(CampaignFileError):
            parse_campaign(_doc(steps=steps))


def test_start_at_must_carry_a_time_zone():
    with pytest.raises(CampaignFileError, match="startAt"):
        parse_campaign(_doc(startAt="2026-12-01T09:00:00"))


def test_first_send_is_now_or_start_at_whichever_is_later():
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert first_send_date(now, None) == now
    assert first_send_date(now, now - timedelta(days=1)) == now
    assert first_send_date(now, now + timedelta(days=1)) == now + timedelta(days=1)


def test_template_syntax_errors_and_unknown_variables_are_refused():
    steps = [
        {"stepOrder": 1, "subjectTemplate": "Hi {{fistName|there}}", "bodyTemplate": "{{ 7*7 }}"},
    ]
    with pytest.raises(CampaignFileError) as excinfo:
        parse_campaign(_doc(steps=steps))
    problems = excinfo.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "steps.0.subjectTemplate",
        "steps.0.bodyTemplate",
    ]
    assert "fistName" in problems[0]
