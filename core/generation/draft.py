"""`EmailDraft`: one email's subject and body, also the LLM's structured-output schema."""

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from core.campaigns.templates import render_subject_and_body


class EmailDraft(BaseModel):
    """One email: a single-line subject and a plain-text body."""

    # The docstring and descriptions are sent to the model as the schema.
    # extra="forbid" emits additionalProperties: false, which strict structured outputs need.
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(description="The email subject: one short line of plain text.")
    body: str = Field(description="The email body: plain text, paragraphs separated by newlines.")


def render_draft(subject: str, body: str, variables: Mapping[str, str]) -> EmailDraft:
    """A step's templates rendered for one lead; one TemplateError reports both fields' problems."""
    rendered_subject, rendered_body = render_subject_and_body(subject, body, variables)
    return EmailDraft(subject=rendered_subject, body=rendered_body)
