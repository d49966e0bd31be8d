"""The shared schema, in the web app's Prisma names: quoted PascalCase tables, camelCase columns.

The Alembic revisions are the source of truth for DDL; `tests/integration/test_migrations.py`
proves these models and `alembic upgrade head` describe the same schema.
"""

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.mailboxes.warmup import (
    DEFAULT_DAILY_LIMIT,
    DEFAULT_WARMUP_INCREMENT,
    DEFAULT_WARMUP_START,
)
from core.replies.actions import ReplyAction
from core.replies.intent import ClassificationMethod, Intent
from core.settings import SMTPSecurity
from core.statuses import (
    BatchRequestStatus,
    CampaignLeadStatus,
    CampaignStatus,
    EmailSendStatus,
    EngagementType,
    GeneratedMessageStatus,
    GenerationBatchStatus,
    MailboxStatus,
    Pricing,
)
from db.base import Base, UTCDateTime, new_id, utcnow


def _in(column: str, values: type[StrEnum]) -> str:
    return f'"{column}" IN (' + ", ".join(f"'{v.value}'" for v in values) + ")"


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, nullable=False, server_default=func.current_timestamp())


def _updated() -> Mapped[datetime]:
    # Prisma's @updatedAt is set by the client, so the column has no database default.
    return mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


def _fk(target: str, ondelete: str = "CASCADE") -> ForeignKey:
    return ForeignKey(target, ondelete=ondelete, onupdate="CASCADE")


class Workspace(Base):
    __tablename__ = "Workspace"

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class Lead(Base):
    __tablename__ = "Lead"
    __table_args__ = (
        Index("Lead_workspaceId_idx", "workspaceId"),
        Index("Lead_workspaceId_email_key", "workspaceId", func.lower(text("email")), unique=True),
        # Colleagues of a lead who replied, for stopOnCompanyReply.
        Index(
            "Lead_workspaceId_emailDomain_idx",
            "workspaceId",
            text("split_part(lower(email), '@', 2)"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    workspaceId: Mapped[str] = mapped_column(Text, _fk("Workspace.id"), nullable=False)
    email: Mapped[str] = mapped_column(Text, nullable=False)
    firstName: Mapped[str | None] = mapped_column(Text)
    lastName: Mapped[str | None] = mapped_column(Text)
    companyName: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    industry: Mapped[str | None] = mapped_column(Text)
    companySize: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(Text)
    customFields: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class Campaign(Base):
    __tablename__ = "Campaign"
    __table_args__ = (
        Index("Campaign_workspaceId_idx", "workspaceId"),
        CheckConstraint(_in("status", CampaignStatus), name="status"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    workspaceId: Mapped[str] = mapped_column(Text, _fk("Workspace.id"), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="draft")
    sendingRules: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"), default=dict
    )
    startAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()
    goal: Mapped[str | None] = mapped_column(Text)
    # Why it was last paused (a circuit breaker's figures, or an operator's reason), and when
    # its status last changed: a breaker counts only what came after a resume.
    statusReason: Mapped[str | None] = mapped_column(Text)
    statusChangedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SequenceStep(Base):
    __tablename__ = "SequenceStep"
    __table_args__ = (
        UniqueConstraint("campaignId", "stepOrder"),
        CheckConstraint('"stepOrder" >= 1', name="stepOrder"),
        CheckConstraint('"delayDays" >= 0', name="delayDays"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    campaignId: Mapped[str] = mapped_column(Text, _fk("Campaign.id"), nullable=False)
    stepOrder: Mapped[int] = mapped_column(Integer, nullable=False)
    delayDays: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    subjectTemplate: Mapped[str] = mapped_column(Text, nullable=False)
    bodyTemplate: Mapped[str] = mapped_column(Text, nullable=False)
    createdAt: Mapped[datetime] = _created()
    aiInstructions: Mapped[str | None] = mapped_column(Text)
    # The A/B test's winner once `sendingRules.abTest.autoSelect` chose one (every later lead
    # gets it), when, and the figures it was chosen on (`core.campaigns.variants`).
    variantWinner: Mapped[str | None] = mapped_column(Text)
    variantWinnerAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    variantWinnerFigures: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class SequenceStepVariant(Base):
    """One A/B variant of a step: its templates and instructions override the step's."""

    __tablename__ = "SequenceStepVariant"
    __table_args__ = (
        Index("SequenceStepVariant_stepId_key_key", "stepId", "key", unique=True),
        CheckConstraint("weight >= 0", name="weight"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    stepId: Mapped[str] = mapped_column(Text, _fk("SequenceStep.id"), nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    subjectTemplate: Mapped[str | None] = mapped_column(Text)
    bodyTemplate: Mapped[str | None] = mapped_column(Text)
    aiInstructions: Mapped[str | None] = mapped_column(Text)
    weight: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1", default=1)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class CampaignLead(Base):
    __tablename__ = "CampaignLead"
    __table_args__ = (
        UniqueConstraint("campaignId", "leadId"),
        Index("CampaignLead_leadId_idx", "leadId"),
        Index("CampaignLead_nextScheduledDate_idx", "nextScheduledDate"),
        # The due query: active leads by send date. Partial, so finished leads cost nothing.
        Index(
            "CampaignLead_due_idx",
            "nextScheduledDate",
            postgresql_where=text("status = 'active' AND \"nextScheduledDate\" IS NOT NULL"),
        ),
        CheckConstraint(_in("status", CampaignLeadStatus), name="status"),
        # Free page space so the lease a claim writes is a HOT update (migration 0005).
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    campaignId: Mapped[str] = mapped_column(Text, _fk("Campaign.id"), nullable=False)
    leadId: Mapped[str] = mapped_column(Text, _fk("Lead.id"), nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    stopReason: Mapped[str | None] = mapped_column(Text)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()
    currentStepOrder: Mapped[int | None] = mapped_column(Integer)
    nextScheduledDate: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The generation claim: a lease that expires, and a token that fences a zombie's writes.
    claimedBy: Mapped[str | None] = mapped_column(Text)
    claimedUntil: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimToken: Mapped[str | None] = mapped_column(Text)
    # Failed generation attempts in a row, and why the last one failed (held leads).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    lastError: Mapped[str | None] = mapped_column(Text)
    # Soft bounces seen; the lead becomes `bounced` after ENGAGEMENT_SOFT_BOUNCE_LIMIT of them.
    softBounces: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)


class GeneratedMessage(Base):
    __tablename__ = "GeneratedMessage"
    __table_args__ = (
        Index("GeneratedMessage_leadId_idx", "leadId"),
        # At most one current message per (campaign, lead, step); superseded ones are history.
        Index(
            "GeneratedMessage_current_key",
            "campaignId",
            "leadId",
            "stepId",
            unique=True,
            postgresql_where=text("status <> 'superseded'"),
        ),
        # The review queue: `review list` and the campaign report's oldest pending message.
        Index(
            "GeneratedMessage_pending_review_idx",
            "campaignId",
            "createdAt",
            postgresql_where=text("status = 'pending_review'"),
        ),
        # The drafts written ahead and not used yet, which every run of
        # pregenerate-upcoming-steps looks over for those to retire.
        Index(
            "GeneratedMessage_pregenerated_idx",
            "createdAt",
            postgresql_where=text("status = 'pregenerated'"),
        ),
        CheckConstraint(_in("status", GeneratedMessageStatus), name="status"),
        CheckConstraint(_in("pricing", Pricing), name="pricing"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    campaignId: Mapped[str] = mapped_column(Text, _fk("Campaign.id"), nullable=False)
    leadId: Mapped[str] = mapped_column(Text, _fk("Lead.id"), nullable=False)
    stepId: Mapped[str] = mapped_column(Text, _fk("SequenceStep.id"), nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="generated")
    createdAt: Mapped[datetime] = _created()
    model: Mapped[str | None] = mapped_column(Text)
    promptVersion: Mapped[str | None] = mapped_column(Text)
    inputHash: Mapped[str | None] = mapped_column(Text)
    promptTokens: Mapped[int | None] = mapped_column(Integer)
    completionTokens: Mapped[int | None] = mapped_column(Integer)
    latencyMs: Mapped[int | None] = mapped_column(Integer)
    # NULL for an LLM call of a model with no price (core/generation/pricing.py): unknown, not 0.
    costUsd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    # Set when the rendered template was sent instead of LLM output, and why.
    fallbackReason: Mapped[str | None] = mapped_column(Text)
    # Why it waits for a person (`pending_review`): the campaign's review rule, or the gate's
    # reasons when an approved edit failed it; the person's own note (a rejection's why); when.
    reviewReason: Mapped[str | None] = mapped_column(Text)
    reviewNote: Mapped[str | None] = mapped_column(Text)
    reviewedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The step variant it was written from (`SequenceStepVariant.key`); null for a step without.
    variantKey: Mapped[str | None] = mapped_column(Text)
    # Of promptTokens, those read from the provider's prompt cache (billed at the cached rate)
    # and the part of costUsd they cost; the rate the call was billed at (`standard`, `flex`,
    # `batch`; NULL for the template and for messages written before batch_generation).
    cachedTokens: Mapped[int | None] = mapped_column(Integer)
    cachedCostUsd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    pricing: Mapped[str | None] = mapped_column(Text)
    # Why a draft written ahead became `superseded` without being sent: its lead came due with
    # other input, or a run of pregenerate-upcoming-steps retired it (the lead stopped, moved
    # on, or the draft outlived its window). NULL for every other message.
    statusReason: Mapped[str | None] = mapped_column(Text)


class GenerationBatch(Base):
    """One Batch API job writing drafts ahead (`pregenerate-upcoming-steps`).

    The row and its requests are committed before anything is uploaded; `id` goes into the
    batch's metadata, so a run killed between submission and recording the OpenAI id finds the
    batch again by listing instead of submitting its requests twice.
    """

    __tablename__ = "GenerationBatch"
    __table_args__ = (
        Index("GenerationBatch_openaiBatchId_key", "openaiBatchId", unique=True),
        Index(
            "GenerationBatch_open_idx",
            "createdAt",
            postgresql_where=text("status IN ('preparing', 'submitted')"),
        ),
        CheckConstraint(_in("status", GenerationBatchStatus), name="status"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    openaiBatchId: Mapped[str | None] = mapped_column(Text)
    inputFileId: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="preparing")
    model: Mapped[str] = mapped_column(Text, nullable=False)
    requestCount: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    completedCount: Mapped[int | None] = mapped_column(Integer)
    failedCount: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    createdAt: Mapped[datetime] = _created()
    submittedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GenerationBatchRequest(Base):
    """One lead's step in a GenerationBatch; `customId` is stable for the content hash, so a
    retried run never submits the same lead, step and input twice."""

    __tablename__ = "GenerationBatchRequest"
    __table_args__ = (
        Index("GenerationBatchRequest_customId_key", "customId", unique=True),
        Index("GenerationBatchRequest_batchId_idx", "batchId"),
        Index("GenerationBatchRequest_campaignLeadId_stepId_idx", "campaignLeadId", "stepId"),
        CheckConstraint(_in("status", BatchRequestStatus), name="status"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    batchId: Mapped[str] = mapped_column(Text, _fk("GenerationBatch.id"), nullable=False)
    customId: Mapped[str] = mapped_column(Text, nullable=False)
    campaignLeadId: Mapped[str] = mapped_column(Text, _fk("CampaignLead.id"), nullable=False)
    stepId: Mapped[str] = mapped_column(Text, _fk("SequenceStep.id"), nullable=False)
    inputHash: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    generatedMessageId: Mapped[str | None] = mapped_column(
        Text, _fk("GeneratedMessage.id", "SET NULL")
    )
    createdAt: Mapped[datetime] = _created()
    completedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EmailSend(Base):
    __tablename__ = "EmailSend"
    __table_args__ = (
        UniqueConstraint("campaignId", "leadId", "stepId"),
        Index("EmailSend_leadId_idx", "leadId"),
        Index("EmailSend_providerMessageId_idx", "providerMessageId"),
        # Events that carry only an address (a reply without threading headers) match here.
        Index("EmailSend_lower_toEmail_idx", func.lower(text('"toEmail"'))),
        # The delivery claim: scheduled sends by time. Partial, so sent history costs nothing.
        Index(
            "EmailSend_due_idx",
            "scheduledFor",
            postgresql_where=text("status = 'scheduled'"),
        ),
        # Caps and gaps count a mailbox's and a campaign's handovers of the day.
        Index(
            "EmailSend_mailbox_attemptedAt_idx",
            "mailbox",
            "attemptedAt",
            postgresql_where=text('"attemptedAt" IS NOT NULL'),
        ),
        Index(
            "EmailSend_campaignId_attemptedAt_idx",
            "campaignId",
            "attemptedAt",
            postgresql_where=text('"attemptedAt" IS NOT NULL'),
        ),
        # Each run looks for handovers whose worker is gone.
        Index(
            "EmailSend_sending_idx",
            "claimedUntil",
            postgresql_where=text("status = 'sending'"),
        ),
        # Sends awaiting review have no slot yet; each generation run releases the approved ones.
        Index(
            "EmailSend_awaiting_review_idx",
            "campaignId",
            postgresql_where=text("status = 'scheduled' AND \"scheduledFor\" IS NULL"),
        ),
        # Each run reconciles the unknown ones from their mailboxes' Sent folders, oldest first.
        Index(
            "EmailSend_unknown_idx",
            "attemptedAt",
            postgresql_where=text("status = 'unknown'"),
        ),
        CheckConstraint(_in("status", EmailSendStatus), name="status"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    campaignId: Mapped[str] = mapped_column(Text, _fk("Campaign.id"), nullable=False)
    leadId: Mapped[str] = mapped_column(Text, _fk("Lead.id"), nullable=False)
    stepId: Mapped[str] = mapped_column(Text, _fk("SequenceStep.id"), nullable=False)
    generatedMessageId: Mapped[str | None] = mapped_column(
        Text, _fk("GeneratedMessage.id", ondelete="SET NULL")
    )
    toEmail: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="scheduled")
    scheduledFor: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sentAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    providerMessageId: Mapped[str | None] = mapped_column(Text)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()
    # The delivery claim, fenced by its token like the generation claim.
    claimedBy: Mapped[str | None] = mapped_column(Text)
    claimedUntil: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimToken: Mapped[str | None] = mapped_column(Text)
    # Deliveries tried (4xx answers count), and why the row has its status or was deferred.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    statusReason: Mapped[str | None] = mapped_column(Text)
    # The sending address, kept so a lead's follow-ups leave from the same mailbox.
    mailbox: Mapped[str | None] = mapped_column(Text)
    # When the handover to the transport began (status became `sending`).
    attemptedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Its message's step variant, copied when the send is written, so the report needs no join.
    variantKey: Mapped[str | None] = mapped_column(Text)


class EngagementEvent(Base):
    __tablename__ = "EngagementEvent"
    __table_args__ = (
        Index("EngagementEvent_emailSendId_idx", "emailSendId"),
        Index("EngagementEvent_dedupeKey_key", "dedupeKey", unique=True),
        # The last days' bounces and complaints, which the circuit breakers weigh every run.
        Index(
            "EngagementEvent_breaker_idx",
            "createdAt",
            postgresql_where=text("type IN ('bounce', 'complaint')"),
        ),
        CheckConstraint(_in("type", EngagementType), name="type"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    emailSendId: Mapped[str] = mapped_column(Text, _fk("EmailSend.id"), nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    occurredAt: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # "metadata" is reserved on declarative classes, so the attribute has another name.
    eventMetadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    createdAt: Mapped[datetime] = _created()
    # The provider's event id, or a content hash: the same event ingested twice is one row.
    dedupeKey: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    # Opens and clicks a machine made (core.engagement.machine); false: no rule flagged it.
    isMachine: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=false(), default=False
    )
    machineReason: Mapped[str | None] = mapped_column(Text)


class Suppression(Base):
    """Addresses never emailed again in a workspace: unsubscribes, complaints, hard bounces."""

    __tablename__ = "Suppression"
    __table_args__ = (
        Index(
            "Suppression_workspaceId_email_key",
            "workspaceId",
            func.lower(text("email")),
            unique=True,
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    workspaceId: Mapped[str] = mapped_column(Text, _fk("Workspace.id"), nullable=False)
    email: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    createdAt: Mapped[datetime] = _created()


class EngagementInbox(Base):
    """Webhook payloads whose signature checked out, stored before the 2xx, drained by a flow."""

    __tablename__ = "EngagementInbox"
    __table_args__ = (
        # A provider's replay token (Mailgun's) is accepted once.
        Index("EngagementInbox_provider_replayKey_key", "provider", "replayKey", unique=True),
        Index(
            "EngagementInbox_pending_idx",
            "receivedAt",
            postgresql_where=text('"processedAt" IS NULL'),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[Any] = mapped_column(JSONB, nullable=False)
    replayKey: Mapped[str | None] = mapped_column(Text)
    receivedAt: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, server_default=func.current_timestamp()
    )
    processedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)


class EngagementQuarantine(Base):
    """Events that match no send: kept, counted and reported, never dropped."""

    __tablename__ = "EngagementQuarantine"
    __table_args__ = (Index("EngagementQuarantine_dedupeKey_key", "dedupeKey", unique=True),)

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    dedupeKey: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    occurredAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    providerMessageId: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[Any | None] = mapped_column(JSONB)
    createdAt: Mapped[datetime] = _created()
    resolvedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryCounter(Base):
    """Handovers of one mailbox or campaign on one local day, and when the last one began.

    The handover guard checks a daily cap and the mailbox gap by updating this one row, which
    also serialises overlapping runs on it; the delivery flow creates a day's row from the
    day's sends before its first handover.
    """

    __tablename__ = "DeliveryCounter"
    __table_args__ = (
        CheckConstraint("scope IN ('mailbox', 'campaign')", name="scope"),
        {"postgresql_with": {"fillfactor": 50}},
    )

    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # Local midnight of the day, in UTC (the campaign's zone decides where a day starts).
    day: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lastAt: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Mailbox(Base):
    """A sending mailbox of a workspace: its own SMTP and IMAP logins, warm-up and status.

    Passwords are references (`env:NAME`, `prefect-secret:NAME`), never the secret itself.
    """

    __tablename__ = "Mailbox"
    __table_args__ = (
        Index(
            "Mailbox_workspaceId_email_key", "workspaceId", func.lower(text("email")), unique=True
        ),
        CheckConstraint(_in("status", MailboxStatus), name="status"),
        CheckConstraint(_in("smtpSecurity", SMTPSecurity), name="smtpSecurity"),
        CheckConstraint('"dailyLimit" >= 1', name="dailyLimit"),
        CheckConstraint('"warmupStart" >= 1', name="warmupStart"),
        CheckConstraint('"warmupIncrement" >= 0', name="warmupIncrement"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    workspaceId: Mapped[str] = mapped_column(Text, _fk("Workspace.id"), nullable=False)
    email: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    smtpHost: Mapped[str] = mapped_column(Text, nullable=False)
    smtpPort: Mapped[int] = mapped_column(Integer, nullable=False, server_default="587")
    smtpSecurity: Mapped[str] = mapped_column(Text, nullable=False, server_default="starttls")
    smtpUsername: Mapped[str] = mapped_column(Text, nullable=False)
    smtpPasswordRef: Mapped[str] = mapped_column(Text, nullable=False)
    # No IMAP: replies and the Sent folder of this mailbox are not read.
    imapHost: Mapped[str | None] = mapped_column(Text)
    imapPort: Mapped[int | None] = mapped_column(Integer)
    imapSsl: Mapped[bool | None] = mapped_column(Boolean)
    imapUsername: Mapped[str | None] = mapped_column(Text)
    imapPasswordRef: Mapped[str | None] = mapped_column(Text)
    imapFolder: Mapped[str | None] = mapped_column(Text)
    # The incremental reader's checkpoint for imapFolder; reset when the folder or login changes.
    imapUidValidity: Mapped[int | None] = mapped_column(BigInteger)
    imapLastUid: Mapped[int | None] = mapped_column(BigInteger)
    dailyLimit: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=str(DEFAULT_DAILY_LIMIT)
    )
    warmupStart: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=str(DEFAULT_WARMUP_START)
    )
    warmupIncrement: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=str(DEFAULT_WARMUP_INCREMENT)
    )
    warmupStartedAt: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, server_default=func.current_timestamp()
    )
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    statusReason: Mapped[str | None] = mapped_column(Text)
    statusChangedAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    createdAt: Mapped[datetime] = _created()
    updatedAt: Mapped[datetime] = _updated()


class ReplyClassification(Base):
    """What a reply (or auto-reply) event says and what it did: one row per event, written in the
    transaction that records the event, so a reply ingested again is never acted on twice."""

    __tablename__ = "ReplyClassification"
    __table_args__ = (
        Index("ReplyClassification_engagementEventId_key", "engagementEventId", unique=True),
        CheckConstraint(_in("intent", Intent), name="intent"),
        CheckConstraint(_in("method", ClassificationMethod), name="method"),
        CheckConstraint(_in("action", ReplyAction), name="action"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True, default=new_id)
    engagementEventId: Mapped[str] = mapped_column(Text, _fk("EngagementEvent.id"), nullable=False)
    intent: Mapped[str] = mapped_column(Text, nullable=False)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    returnDate: Mapped[date | None] = mapped_column(Date)
    referralEmail: Mapped[str | None] = mapped_column(Text)
    referralName: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    method: Mapped[str] = mapped_column(Text, nullable=False)
    # The audit of an LLM classification, as GeneratedMessage keeps it for a draft.
    model: Mapped[str | None] = mapped_column(Text)
    promptVersion: Mapped[str | None] = mapped_column(Text)
    inputHash: Mapped[str | None] = mapped_column(Text)
    promptTokens: Mapped[int | None] = mapped_column(Integer)
    completionTokens: Mapped[int | None] = mapped_column(Integer)
    latencyMs: Mapped[int | None] = mapped_column(Integer)
    costUsd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    # Why the rules answered although an LLM is configured (its error).
    note: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    actionDetail: Mapped[str | None] = mapped_column(Text)
    resumeAt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    referralLeadId: Mapped[str | None] = mapped_column(Text, _fk("Lead.id", "SET NULL"))
    createdAt: Mapped[datetime] = _created()
