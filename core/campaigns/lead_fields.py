"""The Lead columns a leads file fills and a template may use, and how an address is checked."""

from typing import Required, TypedDict

from email_validator import EmailNotValidError, validate_email


class LeadRow(TypedDict, total=False):
    """One validated row of a leads file, as enrolment takes it; a missing field is blank."""

    email: Required[str]
    firstName: str | None
    lastName: str | None
    companyName: str | None
    title: str | None
    industry: str | None
    companySize: str | None
    website: str | None
    timezone: str | None
    customFields: dict[str, str]


LEAD_FIELDS: tuple[str, ...] = tuple(
    name for name in LeadRow.__annotations__ if name != "customFields"
)
# Everything but the address, which identifies the lead rather than describing it.
PROFILE_FIELDS: tuple[str, ...] = LEAD_FIELDS[1:]


def normalise_email(value: str) -> str:
    """A lead's address, normalised; ValueError says what is wrong (a leads file, a preview)."""
    if not value:
        raise ValueError("is empty; every lead needs an address")
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("contains a line break or NUL character")
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid address ({exc})") from None
