"""The Lead columns a leads file fills and a template may use, in one place."""

LEAD_FIELDS: tuple[str, ...] = (
    "email",
    "firstName",
    "lastName",
    "companyName",
    "title",
    "industry",
    "companySize",
    "website",
    "timezone",
)
# Everything but the address, which identifies the lead rather than describing it.
PROFILE_FIELDS: tuple[str, ...] = LEAD_FIELDS[1:]
