-- generation_claims: leases on CampaignLead for the generation flow, and what each generation cost.
-- Run after pipeline_safety.sql; `alembic upgrade generation_claims` makes the same change.
-- Every column is nullable or has a default, so the web app's inserts are unaffected.
BEGIN;

ALTER TABLE "CampaignLead" ADD COLUMN "claimedBy" TEXT;
ALTER TABLE "CampaignLead" ADD COLUMN "claimedUntil" TIMESTAMP(3);
ALTER TABLE "CampaignLead" ADD COLUMN "claimToken" TEXT;
ALTER TABLE "CampaignLead" ADD COLUMN "attempts" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "CampaignLead" ADD COLUMN "lastError" TEXT;

ALTER TABLE "GeneratedMessage" ADD COLUMN "model" TEXT;
ALTER TABLE "GeneratedMessage" ADD COLUMN "promptVersion" TEXT;
ALTER TABLE "GeneratedMessage" ADD COLUMN "inputHash" TEXT;
ALTER TABLE "GeneratedMessage" ADD COLUMN "promptTokens" INTEGER;
ALTER TABLE "GeneratedMessage" ADD COLUMN "completionTokens" INTEGER;
ALTER TABLE "GeneratedMessage" ADD COLUMN "latencyMs" INTEGER;
ALTER TABLE "GeneratedMessage" ADD COLUMN "costUsd" NUMERIC(12, 6);
ALTER TABLE "GeneratedMessage" ADD COLUMN "fallbackReason" TEXT;

COMMIT;
