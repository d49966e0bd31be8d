"""Template rendering: plain substitution, fallbacks, clear errors, no code execution."""

import pytest

from core.campaigns.templates import (
    UNRESOLVED_RE,
    TemplateError,
    check_template,
    find_placeholders,
    lead_variables,
    render,
)
from core.generation.draft import EmailDraft, render_draft

LEAD = {
    "email": "ann@acme.test",
    "firstName": "Ann",
    "lastName": "Lee",
    "companyName": "Acme",
    "title": "CTO",
    "industry": "",
    "companySize": 50,
    "website": None,
    "timezone": "Europe/Paris",
}


@pytest.fixture
def variables() -> dict[str, str]:
    return lead_variables(LEAD, {"plan": "pro", "seats": 12, "empty": "  "}, "Bob Sender")


def test_lead_variables_keep_values_and_drop_blank_ones(variables):
    assert variables == {
        "email": "ann@acme.test",
        "firstName": "Ann",
        "lastName": "Lee",
        "companyName": "Acme",
        "title": "CTO",
        "companySize": "50",
        "timezone": "Europe/Paris",
        "customFields.plan": "pro",
        "customFields.seats": "12",
        "senderName": "Bob Sender",
    }


def test_lead_variables_are_single_line():
    variables = lead_variables(
        {"firstName": "Ann\r\nBcc: eve@evil.test", "title": "A\u2028B\x00C\x85D"}, {}, None
    )
    assert variables == {"firstName": "Ann Bcc: eve@evil.test", "title": "A B C D"}


def test_lead_variables_text_of_other_types():
    variables = lead_variables({}, {"vip": True, "tags": ["a", "b"], "ratio": 0.5}, None)
    assert variables == {
        "customFields.vip": "true",
        "customFields.tags": '["a", "b"]',
        "customFields.ratio": "0.5",
    }


def test_plain_spaced_dotted_and_sender_placeholders(variables):
    text = (
        "Hi {{firstName}} {{ lastName }} of {{companyName}}: {{customFields.plan}} - {{senderName}}"
    )
    assert render(text, variables) == "Hi Ann Lee of Acme: pro - Bob Sender"


def test_fallback_used_only_when_missing_or_blank(variables):
    assert render("Hi {{firstName|there}}", variables) == "Hi Ann"
    assert render("Hi {{industry|friend}}", variables) == "Hi friend"
    assert render("Hi {{website | your site }}!", variables) == "Hi your site!"
    assert render("Hi {{customFields.empty|x}}", variables) == "Hi x"
    assert render("Hi {{customFields.unknownKey|none}}", variables) == "Hi none"


def test_blank_value_given_directly_uses_the_fallback():
    assert render("Hi {{firstName|there}}", {"firstName": " \t"}) == "Hi there"
    with pytest.raises(TemplateError):
        render("Hi {{firstName}}", {"firstName": "  "})


def test_empty_fallback_renders_nothing(variables):
    assert render("Hi{{industry|}}!", variables) == "Hi!"


def test_fallback_keeps_later_pipes(variables):
    assert render("{{industry|a|b}}", variables) == "a|b"


def test_missing_variables_are_all_reported_once_per_template(variables):
    with pytest.raises(TemplateError) as caught:
        render("{{industry}} {{website}} {{industry}}", variables, template_name="body")
    assert caught.value.problems == [
        "body: {{industry}} has no value and no fallback (write {{industry|fallback text}})",
        "body: {{website}} has no value and no fallback (write {{website|fallback text}})",
    ]
    assert isinstance(caught.value, ValueError)


def test_missing_company_name_message_suggests_a_fallback():
    with pytest.raises(TemplateError) as caught:
        render("{{companyName}}", {}, template_name="body")
    assert str(caught.value) == (
        "body: {{companyName}} has no value and no fallback (write {{companyName|your team}})"
    )


def test_render_draft_reports_subject_and_body_problems_together(variables):
    with pytest.raises(TemplateError) as caught:
        render_draft("About {{industry}}", "Hi {{website}}, {{customFields.nope}}", variables)
    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("subject: {{industry}}")
    assert problems[1].startswith("body: {{website}}")
    assert problems[2].startswith("body: {{customFields.nope}}")


def test_render_draft_returns_email_draft(variables):
    draft = render_draft("Hi {{firstName}}", "Hello {{companyName}}", variables)
    assert draft == EmailDraft(subject="Hi Ann", body="Hello Acme")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{firstName", "line 1, column 4, near '{{firstName': '{{' is never closed"),
        ("Hi firstName}}", "line 1, column 13, near '}}': '}}' without an opening '{{'"),
        ("x\nHi {{}}", "line 2, column 4, near '{{}}': empty placeholder"),
        ("{{ first name }}", "near '{{ first name }}': a name is letters"),
        ("{{a{{b}}}}", "braces cannot be nested"),
        ("{{first-name}}", "a name is letters"),
        ("{{customFields.a.b}}", "a name is letters"),
    ],
)
def test_malformed_syntax_names_position(template, expected, variables):
    with pytest.raises(TemplateError) as caught:
        render(template, variables, template_name="subject")
    assert str(caught.value).startswith("subject: ")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "template",
    ["{{__class__}}", "{{ 7*7 }}", "{{ firstName.__class__ }}", "{{ config.items() }}"],
)
def test_expressions_are_errors_never_evaluated(template, variables):
    with pytest.raises(TemplateError) as caught:
        render(template, variables)
    assert "49" not in str(caught.value)


def test_jinja_statements_and_comments_are_errors(variables):
    with pytest.raises(TemplateError) as caught:
        render("{% if firstName %}Hi{% endif %} {# note #}", variables)
    problems = caught.value.problems
    assert len(problems) == 3
    assert "template logic" in problems[0]
    assert "template comments" in problems[2]


def test_dollar_and_single_braces_are_literal(variables):
    assert render("${7*7} {firstName} costs $5 {x}", variables) == "${7*7} {firstName} costs $5 {x}"


def test_unknown_variable_is_an_error_even_with_fallback(variables):
    with pytest.raises(TemplateError) as caught:
        render("{{fistName|there}}", variables)
    assert "{{fistName}} is not a known variable" in str(caught.value)


def test_values_are_not_expanded_twice():
    variables = lead_variables({"firstName": "{{companyName}}", "companyName": "Acme"}, {}, None)
    rendered = render("Hi {{firstName}}", variables)
    assert rendered == "Hi {{companyName}}"
    assert UNRESOLVED_RE.search(rendered) is not None


def test_values_with_code_are_inserted_literally():
    variables = {"firstName": "{% import os %}${x}{{7*7}}"}
    assert render("Hi {{firstName}}", variables) == "Hi {% import os %}${x}{{7*7}}"


def test_find_placeholders_in_first_use_order():
    text = "{{firstName|x}} {{ customFields.plan }} {{firstName}} {{senderName}}"
    assert find_placeholders(text) == ["firstName", "customFields.plan", "senderName"]


def test_find_placeholders_raises_on_malformed_text():
    with pytest.raises(TemplateError):
        find_placeholders("{{firstName")


def test_check_template_without_a_lead():
    assert check_template("Hi {{firstName|there}}, {{customFields.plan}}") == []
    assert check_template("{{nope}} {{", "body") == [
        "body: line 1, column 10, near '{{': '{{' is never closed with '}}'",
        "body: {{nope}} is not a known variable (known: email, firstName, lastName, companyName,"
        " title, industry, companySize, website, timezone, senderName, customFields.<key>)",
    ]


def test_unresolved_re_finds_leftovers():
    assert UNRESOLVED_RE.findall("a {{x}} b {{ y|z }}") == ["{{x}}", "{{ y|z }}"]
    assert UNRESOLVED_RE.search("no placeholders { here }") is None
