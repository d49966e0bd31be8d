-- review_before_send: a generated message can wait for a person (`pending_review`), and says
-- why it waits (`reviewReason`), what the person said (`reviewNote`) and when (`reviewedAt`); two
-- partial indexes find the sends awaiting review and the messages pending it, which every
-- generation run, `review list` and the campaign report read.
-- Run after reply_classifications.sql; `alembic upgrade review_before_send` makes the same
-- change. Three nullable columns and two indexes: the web app's inserts are unaffected.
BEGIN;

ALTER TABLE "GeneratedMessage" ADD COLUMN "reviewReason" TEXT;
ALTER TABLE "GeneratedMessage" ADD COLUMN "reviewNote" TEXT;
ALTER TABLE "GeneratedMessage" ADD COLUMN "reviewedAt" TIMESTAMP(3);
CREATE INDEX "GeneratedMessage_pending_review_idx" ON "GeneratedMessage" ("campaignId", "createdAt")
    WHERE status = 'pending_review';
CREATE INDEX "EmailSend_awaiting_review_idx" ON "EmailSend" ("campaignId")
    WHERE status = 'scheduled' AND "scheduledFor" IS NULL;

COMMIT;
