-- add_ai_campaign_fields: the seed's three new fields and its index.
-- Paste into the Supabase SQL editor on a database that has the app's baseline tables.
-- Safe to run twice. `alembic upgrade add_ai_campaign_fields` makes the same change.
BEGIN;

ALTER TABLE "Campaign" ADD COLUMN IF NOT EXISTS "goal" TEXT;

ALTER TABLE "SequenceStep" ADD COLUMN IF NOT EXISTS "aiInstructions" TEXT;

ALTER TABLE "CampaignLead" ADD COLUMN IF NOT EXISTS "currentStepOrder" INTEGER;
ALTER TABLE "CampaignLead" ADD COLUMN IF NOT EXISTS "nextScheduledDate" TIMESTAMP(3);

CREATE INDEX IF NOT EXISTS "CampaignLead_nextScheduledDate_idx"
    ON "CampaignLead" ("nextScheduledDate");

COMMIT;
