"""Leads CSV: good rows kept, each bad row reported with line, field and reason."""

import pytest

from core.campaigns.lead_import import LeadFileError, read_leads_csv


def _read(text: str, **kwargs):
    return read_leads_csv(text.encode("utf-8"), **kwargs)


def _problems(result) -> list[tuple[int, str]]:
    return [(p.line, p.field) for p in result.problems]


def test_aliases_map_to_lead_fields_and_the_rest_to_custom_fields():
    result = _read(
        "E-mail,First Name,last_name,Company,Job Title,TZ,Plan,Seats\n"
        "sarah@Acme.COM,Sarah,Chen,Acme,VP Sales,Europe/Paris,pro,\n"
    )
    [lead] = result.leads.to_dict("records")
    assert lead["email"] == "sarah@acme.com"  # the domain is normalised, the local part kept
    assert (lead["firstName"], lead["lastName"], lead["companyName"]) == ("Sarah", "Chen", "Acme")
    assert (lead["title"], lead["timezone"]) == ("VP Sales", "Europe/Paris")
    assert lead["customFields"] == {"Plan": "pro"}  # a blank custom value is left out
    assert lead["industry"] is None
    assert result.problems == []


def test_a_stray_bom_is_ignored():
    result = read_leads_csv("\ufeffemail,firstName\nann@y.io,Ann\n".encode())
    assert result.leads["email"].tolist() == ["ann@y.io"]
    assert result.problems == []


def test_bad_rows_are_reported_and_good_rows_kept():
    result = _read(
        "email,firstName,companyName,timezone\n"
        "ok1@example.com,A,X,\n"
        "not-an-email,B,X,\n"
        ",C,X,\n"
        "ok1@EXAMPLE.com,D,X,\n"
        "ok2@example.com,E,X,Mars/Olympus\n"
        "ok3@example.com,F\n"
        "ok4@example.com,G,X,America/New_York\n"
    )
    assert result.leads["email"].tolist() == ["ok1@example.com", "ok4@example.com"]
    assert _problems(result) == [
        (3, "email"),
        (4, "email"),
        (5, "email"),
        (6, "timezone"),
        (7, "(row)"),
    ]
    reasons = [p.reason for p in result.problems]
    assert "not a valid address" in reasons[0]
    assert "is empty" in reasons[1]
    assert reasons[2] == "duplicate of line 2"
    assert "Mars/Olympus" in reasons[3]
    assert "has 2 fields, the header has 4" in reasons[4]


def test_bad_encoding_is_reported_per_row():
    data = b"email,firstName\nann@y.io,Ann\njoe@x.io,Jo" + b"\xe9\n" + b"li@z.io,Li\n"
    result = read_leads_csv(data)
    assert result.leads["email"].tolist() == ["ann@y.io", "li@z.io"]
    assert _problems(result) == [(3, "firstName")]
    assert "not valid utf-8" in result.problems[0].reason
    assert read_leads_csv(data, encoding="cp1252").leads["firstName"].tolist() == [
        "Ann",
        "Joé",
        "Li",
    ]


def test_quoted_multiline_fields_keep_line_numbers_right():
    result = _read('email,notes\na@x.io,"two\nlines"\nbad,x\n')
    assert result.leads["customFields"].tolist() == [{"notes": "two\nlines"}]
    assert _problems(result) == [(4, "email")]


def test_header_injection_in_an_address_is_refused():
    result = _read('email\n"a@x.io\r\nBcc: victim@y.io"\n')
    assert result.leads.empty
    assert _problems(result) == [(2, "email")]


def test_internationalised_addresses_are_accepted():
    result = _read("email\nюзер@пример.рф\nchloé@lumière.fr\n")
    assert len(result.leads) == 2
    assert result.problems == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("firstName,companyName\nAnn,X\n", "no email column"),
        ("email,Email\na@x.io,b@x.io\n", "columns appear twice"),
    ],
)
def test_unusable_files_are_refused_whole(text, message):
    with pytest.raises(LeadFileError, match=message):
        _read(text)


def test_blank_lines_are_skipped_silently():
    result = _read("email\n\na@x.io\n,\n")
    assert result.leads["email"].tolist() == ["a@x.io"]
    assert result.problems == []
