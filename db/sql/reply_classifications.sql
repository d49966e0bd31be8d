-- reply_classifications: what each reply (or auto-reply) event says and what it did: its intent,
-- confidence, return date, referral and summary, how it was classified (the LLM's model, prompt
-- version, tokens and cost, or rules), and the action taken. Unique per event, so a reply
-- ingested again is never acted on twice. Run after unknown_sends.sql;
-- `alembic upgrade reply_classifications` makes the same change. A new table only: the web
-- app's inserts are unaffected.
BEGIN;

CREATE TABLE "ReplyClassification" (
    "id" TEXT NOT NULL,
    "engagementEventId" TEXT NOT NULL,
    "intent" TEXT NOT NULL,
    "confidence" DOUBLE PRECISION NOT NULL,
    "returnDate" DATE,
    "referralEmail" TEXT,
    "referralName" TEXT,
    "summary" TEXT NOT NULL,
    "method" TEXT NOT NULL,
    "model" TEXT,
    "promptVersion" TEXT,
    "inputHash" TEXT,
    "promptTokens" INTEGER,
    "completionTokens" INTEGER,
    "latencyMs" INTEGER,
    "costUsd" DECIMAL(12,6),
    "note" TEXT,
    "action" TEXT NOT NULL,
    "actionDetail" TEXT,
    "resumeAt" TIMESTAMP(3),
    "referralLeadId" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "ReplyClassification_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "ReplyClassification_engagementEventId_fkey" FOREIGN KEY ("engagementEventId")
        REFERENCES "EngagementEvent" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "ReplyClassification_referralLeadId_fkey" FOREIGN KEY ("referralLeadId")
        REFERENCES "Lead" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
    CONSTRAINT "ReplyClassification_intent_check" CHECK (intent IN ('interested',
        'meeting_request', 'not_interested', 'not_now', 'out_of_office', 'referral',
        'unsubscribe', 'auto_reply', 'other')),
    CONSTRAINT "ReplyClassification_method_check" CHECK (method IN ('llm', 'rules')),
    CONSTRAINT "ReplyClassification_action_check" CHECK (action IN ('stopped', 'rescheduled',
        'referred', 'unsubscribed', 'recorded')),
    CONSTRAINT "ReplyClassification_confidence_check" CHECK (confidence >= 0 AND confidence <= 1)
);

CREATE UNIQUE INDEX "ReplyClassification_engagementEventId_key"
    ON "ReplyClassification" ("engagementEventId");

COMMIT;
