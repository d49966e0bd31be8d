-- circuit_breakers: a campaign's status carries its reason and the time it last changed (a
-- breaker or an operator paused it, an operator resumed it), and a partial index finds the last
-- days' bounces and complaints, which every delivery and ingestion run weighs against the lines.
-- Run after unknown_sends.sql; `alembic upgrade circuit_breakers` makes the same change. Two
-- nullable columns and an index: the web app's inserts are unaffected.
BEGIN;

ALTER TABLE "Campaign" ADD COLUMN "statusReason" TEXT;
ALTER TABLE "Campaign" ADD COLUMN "statusChangedAt" TIMESTAMP(3);
CREATE INDEX "EngagementEvent_breaker_idx" ON "EngagementEvent" ("createdAt")
    WHERE type IN ('bounce', 'complaint');

COMMIT;
