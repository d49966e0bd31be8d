-- lead_email_domain: an index on each Lead's email domain within its workspace, so a reply under
-- stopOnCompanyReply finds the colleagues at that domain without reading every enrolment of the
-- campaign. Run after delivery_counters.sql; `alembic upgrade lead_email_domain` makes the same
-- change. An index only: the web app's inserts are unaffected.
CREATE INDEX "Lead_workspaceId_emailDomain_idx"
    ON "Lead" ("workspaceId", split_part(lower(email), '@', 2));
