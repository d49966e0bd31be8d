-- engagement_ingestion: deduplicated EngagementEvents, the webhook inbox, the quarantine for
-- events that match no send, and a soft-bounce count per enrolment.
-- Run after delivery_claims.sql; `alembic upgrade engagement_ingestion` makes the same change.
-- Every added column is nullable or has a default, so the web app's inserts are unaffected.
BEGIN;

ALTER TABLE "EngagementEvent" ADD COLUMN "dedupeKey" TEXT;
ALTER TABLE "EngagementEvent" ADD COLUMN "source" TEXT;
CREATE UNIQUE INDEX "EngagementEvent_dedupeKey_key" ON "EngagementEvent" ("dedupeKey");

CREATE INDEX "EmailSend_lower_toEmail_idx" ON "EmailSend" (lower("toEmail"));

ALTER TABLE "CampaignLead" ADD COLUMN "softBounces" INTEGER NOT NULL DEFAULT 0;

CREATE TABLE "EngagementInbox" (
    "id" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "payload" JSONB NOT NULL,
    "replayKey" TEXT,
    "receivedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "processedAt" TIMESTAMP(3),
    "error" TEXT,
    CONSTRAINT "EngagementInbox_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "EngagementInbox_provider_replayKey_key"
    ON "EngagementInbox" ("provider", "replayKey");
CREATE INDEX "EngagementInbox_pending_idx" ON "EngagementInbox" ("receivedAt")
    WHERE "processedAt" IS NULL;

CREATE TABLE "EngagementQuarantine" (
    "id" TEXT NOT NULL,
    "dedupeKey" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "occurredAt" TIMESTAMP(3),
    "providerMessageId" TEXT,
    "email" TEXT,
    "reason" TEXT NOT NULL,
    "payload" JSONB,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "resolvedAt" TIMESTAMP(3),
    CONSTRAINT "EngagementQuarantine_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "EngagementQuarantine_dedupeKey_key" ON "EngagementQuarantine" ("dedupeKey");

COMMIT;
