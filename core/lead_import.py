"""Reading a leads CSV: good rows kept, each bad row reported with its line, field and reason."""

import csv
import io
import re
from dataclasses import dataclass, field

import pandas as pd
from email_validator import EmailNotValidError, validate_email

from core.lead_fields import LEAD_FIELDS
from core.sending_rules import check_timezone

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
    reader = csv.reader(io.StringIO(_decode(data, encoding), newline=""))
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
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise LeadFileError(f"line 1: columns appear twice: {', '.join(duplicated)}")

    problems: list[RowProblem] = []
    records: list[dict[str, object]] = []
    line = 1
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(start, "(row)", f"cannot be parsed as CSV: {exc}"))
            break
        line = reader.line_num
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(columns):
            problems.append(
                RowProblem(
                    start,
                    "(row)",
                    f"has {len(values)} fields, the header has {len(columns)} (truncated or"
                    " unquoted comma?)",
                )
            )
            continue
        bad = [c for c, v in zip(columns, values, strict=True) if _has_undecodable(v)]
        if bad:
            problems.append(
                RowProblem(
                    start,
                    bad[0],
                    f"is not valid {encoding}; re-save the file as UTF-8 or pass --encoding",
                )
            )
            continue
        records.append({"line": start, **dict(zip(columns, values, strict=True))})

    frame = pd.DataFrame.from_records(records, columns=["line", *columns])
    leads, row_problems = _validate(frame, [c for c in columns if c not in LEAD_FIELDS])
    problems.extend(row_problems)
    problems.sort(key=lambda p: p.line)
    return LeadImport(leads=leads, problems=problems)


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
            normalised.append(_normalise_email(email))
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

    frame = frame.assign(
        customFields=[
            {name: value for name, value in zip(custom, row, strict=True) if value.strip() != ""}
            for row in frame[custom].itertuples(index=False, name=None)
        ]
        if custom
        else [{} for _ in range(len(frame))]
    )
    optional = [c for c in LEAD_FIELDS if c != "email"]
    frame = frame[["line", *LEAD_FIELDS, "customFields"]].astype(object)
    frame[optional] = frame[optional].where(frame[optional] != "", None)
    return frame.reset_index(drop=True), problems


def _normalise_email(value: str) -> str:
    if not value:
        raise ValueError("is empty; every lead needs an address")
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("contains a line break or NUL character")
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid address ({exc})") from None
