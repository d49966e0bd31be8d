-- draft_retirement: a draft written ahead that can no longer be used is retired (`superseded`)
-- and says why (`GeneratedMessage.statusReason`); a partial index on the `pregenerated` drafts
-- lets every run of `pregenerate-upcoming-steps` (hourly) find them without reading every message.
-- Run after batch_generation.sql; `alembic upgrade draft_retirement` makes the same change.
-- One nullable column and one index: the web app's inserts are unaffected.
BEGIN;

ALTER TABLE "GeneratedMessage" ADD COLUMN "statusReason" TEXT;
CREATE INDEX "GeneratedMessage_pregenerated_idx" ON "GeneratedMessage" ("createdAt")
    WHERE status = 'pregenerated';

COMMIT;
