-- delivery_claims: leases on EmailSend for the delivery flow, delivery bookkeeping, and the
-- indexes that count a mailbox's and a campaign's sends of the day.
-- Run after campaign_lead_fillfactor.sql; `alembic upgrade delivery_claims` makes the same change.
-- Every column is nullable or has a default, so the web app's inserts are unaffected.
BEGIN;

ALTER TABLE "EmailSend" ADD COLUMN "claimedBy" TEXT;
ALTER TABLE "EmailSend" ADD COLUMN "claimedUntil" TIMESTAMP(3);
ALTER TABLE "EmailSend" ADD COLUMN "claimToken" TEXT;
ALTER TABLE "EmailSend" ADD COLUMN "attempts" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "EmailSend" ADD COLUMN "statusReason" TEXT;
ALTER TABLE "EmailSend" ADD COLUMN "mailbox" TEXT;
ALTER TABLE "EmailSend" ADD COLUMN "attemptedAt" TIMESTAMP(3);

CREATE INDEX "EmailSend_mailbox_attemptedAt_idx" ON "EmailSend" ("mailbox", "attemptedAt")
    WHERE "attemptedAt" IS NOT NULL;
CREATE INDEX "EmailSend_campaignId_attemptedAt_idx" ON "EmailSend" ("campaignId", "attemptedAt")
    WHERE "attemptedAt" IS NOT NULL;
CREATE INDEX "EmailSend_sending_idx" ON "EmailSend" ("claimedUntil") WHERE status = 'sending';

COMMIT;
