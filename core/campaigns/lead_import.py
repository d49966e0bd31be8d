"""Reading a leads CSV: good rows kept, each bad row reported with its line, field and reason."""

import csv
import io
import re
from dataclasses import dataclass, field
from typing import cast

import pandas as pd
from email_validator import EmailNotValidError, validate_email

from core.campaigns.lead_fields import LEAD_FIELDS, LeadRow
from core.campaigns.sending_rules import check_timezone

# Headers are looked up with case, spaces, '_', '-' and '.' removed.
_ALIASES = {
    **{name.lower(): name for name in LEAD_FIELDS},
    "emailaddress": "email",
    "mail": "email",
    "first": "firstName",
    "givenname": "firstName",
    "last": "lastName",
    "surname": "lastName",
    "familyname": "lastName",
    "company": "companyName",
    "organization": "companyName",
    "organisation": "companyName",
    "jobtitle": "title",
    "size": "companySize",
    "employees": "companySize",
    "url": "website",
    "domain": "website",
    "tz": "timezone",
    "timezonename": "timezone",
}
_HEADER_NOISE = re.compile(r"[\s_\-.]+")
# The csv module's default field limit, which was the effective limit when it ended the file:
# a longer value is one row's problem, often an unclosed quote that took in the lines after it.
MAX_FIELD_CHARS = 131_072
# Line ends as the csv module counts them (io.StringIO with newline="").
_LINE_BREAK = re.compile(r"\r\n?|\n")


@dataclass(frozen=True)
class RowProblem:
    """Why one CSV line was not imported."""

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


class LeadFileError(ValueError):
    """The whole file is unusable (no header, no email column); nothing was imported."""


@dataclass
class LeadImport:
    """Good rows as a DataFrame (Lead columns + customFields + line) and the bad rows."""

    leads: pd.DataFrame
    problems: list[RowProblem] = field(default_factory=list)

    def rows(self) -> list[LeadRow]:
        """The good rows as enrolment takes them (the frame's columns are LeadRow's keys)."""
        return cast(list[LeadRow], self.leads.drop(columns="line").to_dict("records"))


def _column_for(header: str) -> str | None:
    return _ALIASES.get(_HEADER_NOISE.sub("", header.strip()).lower())


def _decode(data: bytes, encoding: str) -> str:
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
    text = data.decode(encoding, errors="surrogateescape")
    return text.removeprefix("\ufeff")


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def read_leads_csv(data: bytes, *, encoding: str = "utf-8") -> LeadImport:
    """Parse, normalise and validate a leads CSV; the header maps columns to Lead fields."""
    text = _decode(data, encoding)
    # Over-long values are refused row by row (MAX_FIELD_CHARS); the csv module's own limit
    # would instead stop the whole file at the first one, losing every row after it.
    previous = csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    try:
        return _read_leads(text, encoding)
    finally:
        csv.field_size_limit(previous)


def _read_leads(text: str, encoding: str) -> LeadImport:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise LeadFileError(
            "the file is empty; expected a header line with an email column"
        ) from None
    except csv.Error as exc:
        raise LeadFileError(f"line 1: the header cannot be read as CSV ({exc})") from None
    columns = [_column_for(name) or name.strip() for name in header]
    if "email" not in columns:
        raise LeadFileError(
            f"line 1: no email column in the header {header!r}; name one column 'email'"
        )
    if any("\x00" in name for name in header):
        raise LeadFileError("line 1: a column name contains a NUL character")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise LeadFileError(f"line 1: columns appear twice: {', '.join(duplicated)}")

    problems: list[RowProblem] = []
    records: list[dict[str, object]] = []
    line = last = 1
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(start, "(row)", f"cannot be parsed as CSV: {exc}"))
            break
        line, last = reader.line_num, start
        if not any(value.strip() for value in values):
            continue
        problem = _row_problem(columns, values, encoding)
        if problem is not None:
            field, reason = problem
            if line > start:
                # Quoted line breaks (or an unclosed quote) make one row of several lines.
                reason += f" (the row runs to line {line})"
            problems.append(RowProblem(start, field, reason))
            continue
        records.append({"line": start, **dict(zip(columns, values, strict=True))})
    if records and records[-1]["line"] == last and _ends_inside_quotes(text, last):
        # A file cut off inside its last quoted value still parses, with that value cut short.
        del records[-1]
        problems.append(
            RowProblem(last, columns[-1], "the file ends inside this quoted value (cut off?)")
        )

    frame = pd.DataFrame.from_records(records, columns=["line", *columns])
    leads, row_problems = _validate(frame, [c for c in columns if c not in LEAD_FIELDS])
    problems.extend(row_problems)
    problems.sort(key=lambda p: p.line)
    return LeadImport(leads=leads, problems=problems)


def _row_problem(columns: list[str], values: list[str], encoding: str) -> tuple[str, str] | None:
    """The field at fault in a parsed row and why, or None when the row can be validated."""
    if len(values) != len(columns):
        return "(row)", (
            f"has {len(values)} fields, the header has {len(columns)}"
            " (truncated or unquoted comma?)"
        )
    for column, value in zip(columns, values, strict=True):
        if len(value) > MAX_FIELD_CHARS:
            return (
                column,
                f"is {len(value):,} characters; a value may have at most {MAX_FIELD_CHARS:,}",
            )
        if _has_undecodable(value):
            return column, f"is not valid {encoding}; re-save the file as UTF-8 or pass --encoding"
        if "\x00" in value:
            return column, "contains a NUL character, which cannot be stored"
    return None


def _ends_inside_quotes(text: str, line: int) -> bool:
    """Whether the record starting at `line` runs into the end of the file inside quotes."""
    offset = 0
    for _, match in zip(range(line - 1), _LINE_BREAK.finditer(text), strict=False):
        offset = match.end()
    try:
        for _ in csv.reader(io.StringIO(text[offset:], newline=""), strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _validate(frame: pd.DataFrame, custom: list[str]) -> tuple[pd.DataFrame, list[RowProblem]]:
    problems: list[RowProblem] = []
    for column in LEAD_FIELDS:
        if column not in frame:
            frame[column] = ""
    frame[list(LEAD_FIELDS)] = frame[list(LEAD_FIELDS)].apply(lambda col: col.str.strip())

    keep = pd.Series(True, index=frame.index)
    normalised: list[str] = []
    for index, (line, email, tz) in enumerate(
        zip(frame["line"], frame["email"], frame["timezone"], strict=True)
    ):
        try:
            normalised.append(normalise_email(email))
        except ValueError as exc:
            problems.append(RowProblem(int(line), "email", str(exc)))
            keep.iloc[index] = False
            normalised.append("")
            continue
        try:
            if tz:
                check_timezone(tz)
        except ValueError as exc:
            problems.append(RowProblem(int(line), "timezone", str(exc)))
            keep.iloc[index] = False
    frame["email"] = normalised
    frame = frame[keep]

    # The same address twice in one file: the first line wins, the rest are reported.
    key = frame["email"].str.lower()
    first_line = frame.groupby(key)["line"].transform("min")
    dupes = frame[key.duplicated(keep="first")]
    problems.extend(
        RowProblem(int(line), "email", f"duplicate of line {int(first)}")
        for line, first in zip(dupes["line"], first_line[dupes.index], strict=True)
    )
    frame = frame[~key.duplicated(keep="first")]

    custom_fields: list[dict[str, str]] = (
        [
            {name: value for name, value in zip(custom, row, strict=True) if value.strip() != ""}
            for row in frame[custom].itertuples(index=False, name=None)
        ]
        if custom
        else [{} for _ in range(len(frame))]
    )
    frame = frame.assign(customFields=pd.Series(custom_fields, index=frame.index, dtype=object))
    optional = [c for c in LEAD_FIELDS if c != "email"]
    frame = frame[["line", *LEAD_FIELDS, "customFields"]].astype(object)
    frame[optional] = frame[optional].where(frame[optional] != "", None)
    return frame.reset_index(drop=True), problems


def normalise_email(value: str) -> str:
    """The address as leads are stored (email-validator's normal form); ValueError says why not,
    quoting the value."""
    if not value:
        raise ValueError("is empty; every lead needs an address")
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("contains a line break or NUL character")
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid address ({exc})") from None
