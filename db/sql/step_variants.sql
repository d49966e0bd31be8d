-- step_variants: A/B variants of a sequence step (`SequenceStepVariant`: a key, optional subject
-- and body templates and AI instructions that override the step's, and a weight), the variant each
-- message and send was written from (`variantKey`), and a step's A/B test winner once
-- `sendingRules.abTest.autoSelect` chose one (`variantWinner`, when, and the figures).
-- Run after machine_events.sql; `alembic upgrade step_variants` makes the same change. A new
-- table and nullable columns: the web app's inserts are unaffected.
BEGIN;

CREATE TABLE "SequenceStepVariant" (
    "id" TEXT NOT NULL,
    "stepId" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "subjectTemplate" TEXT,
    "bodyTemplate" TEXT,
    "aiInstructions" TEXT,
    "weight" INTEGER NOT NULL DEFAULT 1,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "SequenceStepVariant_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "SequenceStepVariant_stepId_fkey" FOREIGN KEY ("stepId")
        REFERENCES "SequenceStep" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "SequenceStepVariant_weight_check" CHECK (weight >= 0)
);

CREATE UNIQUE INDEX "SequenceStepVariant_stepId_key_key" ON "SequenceStepVariant" ("stepId", "key");

ALTER TABLE "SequenceStep" ADD COLUMN "variantWinner" TEXT;
ALTER TABLE "SequenceStep" ADD COLUMN "variantWinnerAt" TIMESTAMP(3);
ALTER TABLE "SequenceStep" ADD COLUMN "variantWinnerFigures" JSONB;
ALTER TABLE "GeneratedMessage" ADD COLUMN "variantKey" TEXT;
ALTER TABLE "EmailSend" ADD COLUMN "variantKey" TEXT;

COMMIT;
