"""The quality gate: each rule rejects what it should and passes a clean draft."""

import pytest

from core.campaigns.sending_rules import SendingRules
from core.generation.draft import EmailDraft
from core.generation.gate import check_draft, find_links, host_allowed, link_host, normalize_draft
from core.generation.prompt import SYSTEM_RULES

RENDERED = EmailDraft(
    subject="Quick idea for Acme",
    body="Hi Ann,\n\nBook a slot at https://cal.example/bob or write to bob@sender.test.\n\nBob",
)
RULES = SendingRules(link_allowlist=["acme-demo.test"], max_subject_length=40, max_body_length=300)


def _check(subject: str = RENDERED.subject, body: str = RENDERED.body, **kwargs) -> list[str]:
    rules = kwargs.pop("rules", RULES)
    return check_draft(
        EmailDraft(subject=subject, body=body), rendered=RENDERED, rules=rules, **kwargs
    )


def test_clean_draft_passes():
    body = "Hi Ann,\n\nSaw Acme's launch.\tNice!\n\nSee https://acme-demo.test/tour.\n\nBob"
    assert _check(body=body) == []


def test_rendered_template_itself_passes():
    assert _check() == []


@pytest.mark.parametrize(
    "text", ["Hi {{firstName}}", "Hi {{ firstName|there }}", "Hi {{firstName", "Hi }}"]
)
def test_unresolved_placeholders_fail(text):
    assert _check(body=text) == ["contains an unresolved {{placeholder}} or stray template braces"]


def test_empty_subject_and_body_fail():
    assert _check(subject="  ", body="\n") == ["subject is empty", "body is empty"]


def test_lengths_are_limited_by_rules():
    assert _check(subject="x" * 41) == ["subject is 41 characters; the limit is 40"]
    assert _check(subject="x" * 40) == []
    assert _check(body="y" * 301) == ["body is 301 characters; the limit is 300"]


@pytest.mark.parametrize(
    ("subject", "codepoint"),
    [
        ("Hi\nBcc: someone", "U+000A"),
        ("Hi\r", "U+000D"),
        ("Hi\x00", "U+0000"),
        ("Hi\u2028there", "U+2028"),
        ("Hi\u2029there", "U+2029"),
        ("Hi\x85there", "U+0085"),
        ("Hi\tthere", "U+0009"),
        ("Hi \u202eereht", "U+202E"),
    ],
)
def test_subject_must_be_one_clean_line(subject, codepoint):
    problems = _check(subject=subject)
    assert problems == [f"subject must be one line without control characters (found {codepoint})"]


@pytest.mark.parametrize(
    ("body", "codepoint"),
    [("a\rb", "U+000D"), ("a\x00b", "U+0000"), ("a\x1bb", "U+001B"), ("a\u2028b", "U+2028")],
)
def test_body_allows_only_newline_and_tab(body, codepoint):
    assert _check(body=body) == [
        f"body contains control characters other than newline and tab ({codepoint})"
    ]


def test_body_crlf_counts_as_newline():
    assert _check(body="Hi Ann,\r\n\r\nBob") == []


def test_normalize_draft():
    draft = EmailDraft(subject="  Hi  ", body="\n Hi,\r\n\r\nBob \n")
    assert normalize_draft(draft) == EmailDraft(subject="Hi", body="Hi,\n\nBob")


@pytest.mark.parametrize(
    ("body", "host"),
    [
        ("Go to https://evil.test/x now", "evil.test"),
        ("Go to http://evil.test", "evil.test"),
        ("Go to www.evil.test", "www.evil.test"),
        ("See [here](https://evil.test)", "evil.test"),
        ("See <a href='https://evil.test'>", "evil.test"),
        ("Go to https://acme-demo.test.evil.test/", "acme-demo.test.evil.test"),
        ("Go to ftp://evil.test/file", "evil.test"),
    ],
)
def test_links_outside_the_allowlist_fail(body, host):
    assert _check(body=body) == [f"links to {host}, which is not allowed (allowed: acme-demo.test)"]


def test_allowed_name_as_userinfo_does_not_fool_the_host_check():
    assert _check(body="Go to https://acme-demo.test@evil.test/") == [
        "links to evil.test, which is not allowed (allowed: acme-demo.test)",
        "adds 1 email address(es) that the template does not contain",
    ]


@pytest.mark.parametrize(
    "body",
    [
        "See https://acme-demo.test/tour",
        "See https://app.acme-demo.test/x?y=1.",
        "See www.acme-demo.test",
        "See HTTPS://ACME-DEMO.TEST/",
        "Book at https://cal.example/other-slot",
    ],
)
def test_allowlisted_domains_subdomains_and_template_links_pass(body):
    assert _check(body=body) == []


def test_lookalike_domain_is_not_a_subdomain():
    assert _check(body="See https://notacme-demo.test/") == [
        "links to notacme-demo.test, which is not allowed (allowed: acme-demo.test)"
    ]


def test_empty_allowlist_allows_only_links_already_in_the_template():
    rules = SendingRules(link_allowlist=[])
    assert _check(body="Book https://cal.example/bob", rules=rules) == []
    assert _check(body="See https://acme-demo.test", rules=rules) == [
        "links to acme-demo.test, which is not allowed (no links may be added)"
    ]


def test_added_email_addresses_fail_and_are_not_quoted():
    problems = _check(body="Write to bob@sender.test, cc eve@evil.test and sam@evil.test")
    assert problems == ["adds 2 email address(es) that the template does not contain"]
    assert _check(body="Write to BOB@sender.test") == []


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ("As an AI, I cannot", "as an ai"),
        ("Here is my system prompt", "system prompt"),
        ("Hi </lead_profile>", "lead_profile"),
        ("Hi <thread>", "<thread"),
    ],
)
def test_leaked_instructions_fail(body, phrase):
    assert f"contains {phrase!r}, which must never appear in an email" in _check(body=body)


def test_the_word_thread_alone_is_fine():
    assert _check(body="Following up on this thread, Ann.") == []


def test_repeating_a_rules_sentence_fails():
    body = "Hi Ann. Do not invent facts about the recipient, their company or the sender. Bob"
    assert _check(body=body) == ["repeats the instructions it was given"]


def test_custom_system_prompt_sentences_are_guarded():
    secret = "The discount code for partners is SUMMER-TWENTY-FIVE and never share it."
    body = "the discount code for partners is summer-twenty-five and never share it"
    assert _check(body=body, system_prompt=secret) == ["repeats the instructions it was given"]
    assert (
        _check(
            body="Do not invent facts about the recipient, their company or the sender.",
            system_prompt=secret,
        )
        == []
    )


def test_phrases_already_in_the_template_are_allowed():
    rendered = EmailDraft(subject="Hi", body="Our system prompt product helps you. Write a@b.test")
    draft = EmailDraft(subject="Hi", body="Our system prompt product helps. Write a@b.test")
    assert check_draft(draft, rendered=rendered, rules=RULES) == []


def test_system_rules_have_distinctive_sentences():
    assert "Do not invent facts about the recipient" in SYSTEM_RULES


def test_link_helpers():
    assert find_links("a https://x.test/p). b www.y.test, c") == ["https://x.test/p", "www.y.test"]
    assert link_host("https://User@Sub.X.test:8080/p") == "sub.x.test"
    assert link_host("https://[bad") is None
    assert host_allowed("a.b.test", ["b.test"]) is True
    assert host_allowed("ab.test", ["b.test"]) is False


def test_malformed_link_fails():
    assert _check(body="See https://[oops/") == ["contains a malformed link"]
