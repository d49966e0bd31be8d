-- unknown_sends: a partial index on the `unknown` sends by handover time, so every delivery run
-- finds the sends it reconciles from their mailboxes' Sent folders without reading sent history.
-- Run after mailboxes.sql; `alembic upgrade unknown_sends` makes the same change. An index only:
-- the web app's inserts are unaffected.
CREATE INDEX "EmailSend_unknown_idx" ON "EmailSend" ("attemptedAt") WHERE status = 'unknown';
