-- delivery_counters: one row per (mailbox or campaign, local day) holding the handovers of that
-- day and the last one's time, so the handover guard checks a daily cap and the mailbox gap by
-- updating one row instead of counting the day's sends for every send.
-- Run after engagement_ingestion.sql; `alembic upgrade delivery_counters` makes the same change.
-- A new table only: the web app's inserts are unaffected.
BEGIN;

CREATE TABLE "DeliveryCounter" (
    "scope" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "day" TIMESTAMP(3) NOT NULL,
    "used" INTEGER NOT NULL DEFAULT 0,
    "lastAt" TIMESTAMP(3),
    CONSTRAINT "DeliveryCounter_pkey" PRIMARY KEY ("scope", "key", "day"),
    CONSTRAINT "DeliveryCounter_scope_check" CHECK (scope IN ('mailbox', 'campaign'))
) WITH (fillfactor = 50);

COMMIT;
