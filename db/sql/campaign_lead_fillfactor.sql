-- campaign_lead_fillfactor: leave a fifth of each CampaignLead page free, so the lease a claim
-- writes (claimedBy, claimedUntil, claimToken: none indexed) is a HOT update that touches no
-- index. It applies to pages written from now on; `VACUUM FULL "CampaignLead"` repacks old ones.
-- `alembic upgrade campaign_lead_fillfactor` makes the same change.
ALTER TABLE "CampaignLead" SET (fillfactor = 80);
