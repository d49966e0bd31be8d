-- machine_events: every open and click says whether a machine made it (`isMachine`) and which
-- rule said so (`machineReason`): the provider's own flag, Apple Mail Privacy Protection, a
-- scanner's user agent, a click too soon after delivery, or links clicked together. Reports,
-- rates and the follow-up thread count human events only.
-- Run after review_before_send.sql; `alembic upgrade machine_events` makes the same change.
-- `isMachine` is NOT NULL DEFAULT false (false: no rule flagged it), so the web app's inserts
-- are unaffected and the table is not rewritten; `machineReason` is nullable.
BEGIN;

ALTER TABLE "EngagementEvent" ADD COLUMN "isMachine" BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE "EngagementEvent" ADD COLUMN "machineReason" TEXT;

COMMIT;
