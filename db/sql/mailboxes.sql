-- mailboxes: a workspace's sending mailboxes, each with its own SMTP and IMAP login (password
-- references only, never a secret), daily limit, warm-up ramp, status, and the checkpoint of the
-- incremental IMAP reader. Run after lead_email_domain.sql; `alembic upgrade mailboxes` makes the
-- same change. A new table only: the web app's inserts are unaffected.
BEGIN;

CREATE TABLE "Mailbox" (
    "id" TEXT NOT NULL,
    "workspaceId" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "smtpHost" TEXT NOT NULL,
    "smtpPort" INTEGER NOT NULL DEFAULT 587,
    "smtpSecurity" TEXT NOT NULL DEFAULT 'starttls',
    "smtpUsername" TEXT NOT NULL,
    "smtpPasswordRef" TEXT NOT NULL,
    "imapHost" TEXT,
    "imapPort" INTEGER,
    "imapSsl" BOOLEAN,
    "imapUsername" TEXT,
    "imapPasswordRef" TEXT,
    "imapFolder" TEXT,
    "imapUidValidity" BIGINT,
    "imapLastUid" BIGINT,
    "dailyLimit" INTEGER NOT NULL DEFAULT 40,
    "warmupStart" INTEGER NOT NULL DEFAULT 5,
    "warmupIncrement" INTEGER NOT NULL DEFAULT 3,
    "warmupStartedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "status" TEXT NOT NULL DEFAULT 'active',
    "statusReason" TEXT,
    "statusChangedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "Mailbox_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "Mailbox_workspaceId_fkey" FOREIGN KEY ("workspaceId")
        REFERENCES "Workspace" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "Mailbox_status_check" CHECK (status IN ('active', 'paused', 'disconnected')),
    CONSTRAINT "Mailbox_smtpSecurity_check" CHECK ("smtpSecurity" IN ('starttls', 'ssl', 'none')),
    CONSTRAINT "Mailbox_dailyLimit_check" CHECK ("dailyLimit" >= 1),
    CONSTRAINT "Mailbox_warmupStart_check" CHECK ("warmupStart" >= 1),
    CONSTRAINT "Mailbox_warmupIncrement_check" CHECK ("warmupIncrement" >= 0)
);
CREATE UNIQUE INDEX "Mailbox_workspaceId_email_key" ON "Mailbox" ("workspaceId", lower(email));

COMMIT;
