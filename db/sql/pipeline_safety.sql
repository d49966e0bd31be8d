-- pipeline_safety: the constraints and indexes that make the pipeline safe, and the Suppression list.
-- Run after add_ai_campaign_fields.sql; `alembic upgrade pipeline_safety` makes the same change.
-- It fails (and changes nothing) if existing rows break a rule: fix those rows first.
BEGIN;

ALTER TABLE "Campaign" ADD CONSTRAINT "Campaign_status_check"
    CHECK ("status" IN ('draft', 'active', 'paused', 'completed', 'archived'));
ALTER TABLE "CampaignLead" ADD CONSTRAINT "CampaignLead_status_check"
    CHECK ("status" IN ('active', 'paused', 'completed', 'replied', 'bounced', 'unsubscribed',
                        'stopped', 'failed'));
ALTER TABLE "GeneratedMessage" ADD CONSTRAINT "GeneratedMessage_status_check"
    CHECK ("status" IN ('generated', 'pending_review', 'approved', 'rejected', 'superseded'));
ALTER TABLE "EmailSend" ADD CONSTRAINT "EmailSend_status_check"
    CHECK ("status" IN ('scheduled', 'sending', 'sent', 'failed', 'cancelled', 'unknown'));
ALTER TABLE "EngagementEvent" ADD CONSTRAINT "EngagementEvent_type_check"
    CHECK ("type" IN ('open', 'click', 'reply', 'auto_reply', 'bounce', 'unsubscribe',
                      'complaint'));
ALTER TABLE "SequenceStep" ADD CONSTRAINT "SequenceStep_stepOrder_check" CHECK ("stepOrder" >= 1);
ALTER TABLE "SequenceStep" ADD CONSTRAINT "SequenceStep_delayDays_check" CHECK ("delayDays" >= 0);

-- One enrolment per (campaign, lead); one step per position; one send per (campaign, lead, step).
ALTER TABLE "CampaignLead" ADD CONSTRAINT "CampaignLead_campaignId_leadId_key"
    UNIQUE ("campaignId", "leadId");
ALTER TABLE "SequenceStep" ADD CONSTRAINT "SequenceStep_campaignId_stepOrder_key"
    UNIQUE ("campaignId", "stepOrder");
ALTER TABLE "EmailSend" ADD CONSTRAINT "EmailSend_campaignId_leadId_stepId_key"
    UNIQUE ("campaignId", "leadId", "stepId");
-- At most one current (not superseded) message per (campaign, lead, step).
CREATE UNIQUE INDEX "GeneratedMessage_current_key"
    ON "GeneratedMessage" ("campaignId", "leadId", "stepId") WHERE "status" <> 'superseded';
-- One lead per address in a workspace, whatever its case.
CREATE UNIQUE INDEX "Lead_workspaceId_email_key" ON "Lead" ("workspaceId", lower("email"));

-- The due queries: partial, so finished leads and sent mail cost the claim nothing.
CREATE INDEX "CampaignLead_due_idx" ON "CampaignLead" ("nextScheduledDate")
    WHERE "status" = 'active' AND "nextScheduledDate" IS NOT NULL;
CREATE INDEX "EmailSend_due_idx" ON "EmailSend" ("scheduledFor") WHERE "status" = 'scheduled';

CREATE TABLE "Suppression" (
    "id" TEXT NOT NULL,
    "workspaceId" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Suppression_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "Suppression_workspaceId_fkey" FOREIGN KEY ("workspaceId")
        REFERENCES "Workspace" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "Suppression_workspaceId_email_key"
    ON "Suppression" ("workspaceId", lower("email"));

COMMIT;
