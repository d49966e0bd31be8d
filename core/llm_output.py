"""`EmailDraft`: one email's subject and body, also the LLM's structured-output schema."""

from pydantic import BaseModel, ConfigDict, Field


class EmailDraft(BaseModel):
    """One email: a single-line subject and a plain-text body."""

    # The docstring and descriptions are sent to the model as the schema.
    # extra="forbid" emits additionalProperties: false, which strict structured outputs need.
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(description="The email subject: one short line of plain text.")
    body: str = Field(description="The email body: plain text, paragraphs separated by newlines.")
