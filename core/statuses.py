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
    # Written ahead through the Batch API; has no send until its lead comes due with the same
    # content hash (then it becomes `generated` or `pending_review`, else `superseded`).
    pregenerated = "pregenerated"


class GenerationBatchStatus(StrEnum):
    preparing = "preparing"  # requests recorded, not (yet known to be) submitted
    submitted = "submitted"  # the API has it: validating, in_progress or finalizing
    completed = "completed"
    expired = "expired"
    failed = "failed"
    cancelled = "cancelled"


class BatchRequestStatus(StrEnum):
    pending = "pending"  # in a batch not read yet
    drafted = "drafted"  # passed the gate: a `pregenerated` GeneratedMessage
    rejected = "rejected"  # failed the gate; the lead generates synchronously when due
    failed = "failed"  # per-request error, malformed line, or the batch expired/failed
    stale = "stale"  # the lead's data, step or thread changed since submission
    unused = "unused"  # the lead already had its message for the step


class Pricing(StrEnum):
    """The rate a generation was billed at; see core.generation.pricing."""

    standard = "standard"
    flex = "flex"
    batch = "batch"


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
