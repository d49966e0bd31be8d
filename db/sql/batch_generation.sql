-- batch_generation: drafts written ahead through the Batch API at half price. A generated
-- message may be `pregenerated` (no send yet) and records its cached prompt tokens and their
-- cost (`cachedTokens`, `cachedCostUsd`) and the rate it was billed at (`pricing`); `GenerationBatch` and
-- `GenerationBatchRequest` record each batch and each lead's request in it, the request's
-- `customId` unique so no lead's step is submitted twice for the same input.
-- Run after step_variants.sql; `alembic upgrade batch_generation` makes the same change.
-- Three nullable columns, a wider status check and two new tables: the web app's inserts are
-- unaffected.
BEGIN;

ALTER TABLE "GeneratedMessage" DROP CONSTRAINT "GeneratedMessage_status_check";
ALTER TABLE "GeneratedMessage" ADD CONSTRAINT "GeneratedMessage_status_check" CHECK ("status" IN
    ('generated', 'pending_review', 'approved', 'rejected', 'superseded', 'pregenerated'));
ALTER TABLE "GeneratedMessage" ADD COLUMN "cachedTokens" INTEGER;
ALTER TABLE "GeneratedMessage" ADD COLUMN "cachedCostUsd" DECIMAL(12,6);
ALTER TABLE "GeneratedMessage" ADD COLUMN "pricing" TEXT;
ALTER TABLE "GeneratedMessage" ADD CONSTRAINT "GeneratedMessage_pricing_check"
    CHECK ("pricing" IN ('standard', 'flex', 'batch'));

CREATE TABLE "GenerationBatch" (
    "id" TEXT NOT NULL,
    "openaiBatchId" TEXT,
    "inputFileId" TEXT,
    "status" TEXT NOT NULL DEFAULT 'preparing',
    "model" TEXT NOT NULL,
    "requestCount" INTEGER NOT NULL DEFAULT 0,
    "completedCount" INTEGER,
    "failedCount" INTEGER,
    "error" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "submittedAt" TIMESTAMP(3),
    "completedAt" TIMESTAMP(3),
    CONSTRAINT "GenerationBatch_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "GenerationBatch_status_check" CHECK ("status" IN
        ('preparing', 'submitted', 'completed', 'expired', 'failed', 'cancelled'))
);
CREATE UNIQUE INDEX "GenerationBatch_openaiBatchId_key" ON "GenerationBatch" ("openaiBatchId");
CREATE INDEX "GenerationBatch_open_idx" ON "GenerationBatch" ("createdAt")
    WHERE status IN ('preparing', 'submitted');

CREATE TABLE "GenerationBatchRequest" (
    "id" TEXT NOT NULL,
    "batchId" TEXT NOT NULL,
    "customId" TEXT NOT NULL,
    "campaignLeadId" TEXT NOT NULL,
    "stepId" TEXT NOT NULL,
    "inputHash" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'pending',
    "error" TEXT,
    "generatedMessageId" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "completedAt" TIMESTAMP(3),
    CONSTRAINT "GenerationBatchRequest_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "GenerationBatchRequest_batchId_fkey" FOREIGN KEY ("batchId")
        REFERENCES "GenerationBatch"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "GenerationBatchRequest_campaignLeadId_fkey" FOREIGN KEY ("campaignLeadId")
        REFERENCES "CampaignLead"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "GenerationBatchRequest_stepId_fkey" FOREIGN KEY ("stepId")
        REFERENCES "SequenceStep"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "GenerationBatchRequest_generatedMessageId_fkey" FOREIGN KEY ("generatedMessageId")
        REFERENCES "GeneratedMessage"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    CONSTRAINT "GenerationBatchRequest_status_check" CHECK ("status" IN
        ('pending', 'drafted', 'rejected', 'failed', 'stale', 'unused'))
);
CREATE UNIQUE INDEX "GenerationBatchRequest_customId_key" ON "GenerationBatchRequest" ("customId");
CREATE INDEX "GenerationBatchRequest_batchId_idx" ON "GenerationBatchRequest" ("batchId");
CREATE INDEX "GenerationBatchRequest_campaignLeadId_stepId_idx"
    ON "GenerationBatchRequest" ("campaignLeadId", "stepId");

COMMIT;
