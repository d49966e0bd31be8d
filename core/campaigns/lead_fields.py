"""The Lead columns a leads file fills and a template may use, in one place."""

from typing import Required, TypedDict


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
