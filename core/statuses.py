"""Every status and engagement type the pipeline writes; the database checks the same lists."""

from enum import StrEnum


class CampaignStatus(StrEnum):
    draft = "draft"
    active = "active"
    paused = "paused"
    completed = "completed"
    archived = "archived"


class CampaignLeadStatus(StrEnum):
    active = "active"
    paused = "paused"
    completed = "completed"
    replied = "replied"
    bounced = "bounced"
    unsubscribed = "unsubscribed"
    stopped = "stopped"
    failed = "failed"


class GeneratedMessageStatus(StrEnum):
    generated = "generated"
    pending_review = "pending_review"
    approved = "approved"
    rejected = "rejected"
    superseded = "superseded"


class EmailSendStatus(StrEnum):
    scheduled = "scheduled"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    cancelled = "cancelled"
    unknown = "unknown"


class EngagementType(StrEnum):
    open = "open"
    click = "click"
    reply = "reply"
    auto_reply = "auto_reply"
    bounce = "bounce"
    unsubscribe = "unsubscribe"
    complaint = "complaint"


class MailboxStatus(StrEnum):
    active = "active"
    paused = "paused"
    disconnected = "disconnected"
