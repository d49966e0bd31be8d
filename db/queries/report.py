"""Reading the campaign report's frames: counts grouped per (campaign, step) in SQL, with pandas.

Which timestamp puts a row in the window [since, until), per table:

- `CampaignLead`: `createdAt` (enrolled in the window).
- `GeneratedMessage`: `createdAt` (generated in the window; `superseded` rows count for the
  spend, not for `generated`; a row whose model has no price, `costUsd` NULL, counts for
  `unpriced` and by its model, and for no spend).
- `EmailSend`: `createdAt` for `scheduled`; the handover, `COALESCE("sentAt", "attemptedAt")`,
  for `sent` and `failed`, the engagement counts and the delivery lag. `attemptedAt` covers a
  send refused at handover, which has no `sentAt`; `sentAt` alone covers rows the web app wrote.
- `ReplyClassification`: a reply is positive when its intent is in `POSITIVE_INTENTS`.
- `EngagementEvent`: opens and clicks count only when a person made them (`NOT "isMachine"`),
  and the machines' apart; only events of the window's handed-over sends (whenever after `since`
  they happened), and only those that occurred (`occurredAt`, not the ingestion time
  `createdAt`) before `until`: a report of a past window counts what had happened by its end,
  and events after `until` never change it.
- The review queue: messages pending review now, written (`createdAt`) before `until`.
- Per campaign and day: the sent sends on their handover's UTC day, their replies on the UTC day
  the first reply occurred.
- Per mailbox and day: sends with a mailbox handed over in the window, one row each with its
  UTC day and what became of it (events as above), grouped by pandas.

`core/analytics/campaign_report.py` says what each column means. Every count is of distinct sends
(an email opened ten times is one open). All frames are read in one REPEATABLE READ snapshot when
the session has not begun a transaction yet, so they agree with each other. The EmailSend and
EngagementEvent scans filter on expressions no index covers: a report over a month reads the table
once, which is fine for a periodic report and is never on the sending path.
"""

import pandas as pd
from sqlalchemy import Text, bindparam, text
from sqlalchemy.orm import Session

from core.analytics.campaign_report import INPUT_COLUMNS, ReportInputs, ReportWindow
from core.replies.intent import POSITIVE_INTENTS
from db.base import UTCDateTime

_PARAMS = (
    bindparam("since", type_=UTCDateTime),
    bindparam("until", type_=UTCDateTime),
    bindparam("campaign_id", type_=Text),
)
_ONE_CAMPAIGN = "(CAST(:campaign_id AS text) IS NULL OR {column} = :campaign_id)"

CAMPAIGNS = text(
    f"""
    SELECT c.id AS campaign_id, c.name AS campaign_name
    FROM "Campaign" c
    WHERE {_ONE_CAMPAIGN.format(column="c.id")}
    """
).bindparams(bindparam("campaign_id", type_=Text))

STEPS = text(
    f"""
    SELECT st."campaignId" AS campaign_id, st.id AS step_id, st."stepOrder" AS step
    FROM "SequenceStep" st
    WHERE {_ONE_CAMPAIGN.format(column='st."campaignId"')}
    """
).bindparams(bindparam("campaign_id", type_=Text))

ENROLMENTS = text(
    f"""
    SELECT cl."campaignId" AS campaign_id, count(*) AS enrolled
    FROM "CampaignLead" cl
    WHERE cl."createdAt" >= :since AND cl."createdAt" < :until
      AND {_ONE_CAMPAIGN.format(column='cl."campaignId"')}
    GROUP BY cl."campaignId"
    """
).bindparams(*_PARAMS)

# A current email (what `generated` counts) of an LLM call (`pricing` is set for each since
# batch_generation, and null for the template) whose model has no price: its cost is NULL, and
# every sum of costs below leaves it out.
_UNPRICED_EMAIL = """gm.status NOT IN ('superseded', 'pregenerated') AND gm."costUsd" IS NULL
                     AND gm.pricing IS NOT NULL"""

GENERATION = text(
    f"""
    SELECT gm."campaignId" AS campaign_id, gm."stepId" AS step_id,
           count(*) FILTER (WHERE gm.status NOT IN ('superseded', 'pregenerated')) AS generated,
           COALESCE(sum(gm."promptTokens"), 0)::bigint AS prompt_tokens,
           COALESCE(sum(gm."completionTokens"), 0)::bigint AS completion_tokens,
           COALESCE(sum(gm."cachedTokens"), 0)::bigint AS cached_tokens,
           count(*) FILTER (WHERE {_UNPRICED_EMAIL}) AS unpriced,
           COALESCE(sum(gm."costUsd"), 0)::float8 AS cost_usd,
           COALESCE(sum(gm."costUsd" - COALESCE(gm."cachedCostUsd", 0))
                    FILTER (WHERE gm.pricing IS DISTINCT FROM 'batch'), 0)::float8 AS sync_cost_usd,
           COALESCE(sum(gm."costUsd" - COALESCE(gm."cachedCostUsd", 0))
                    FILTER (WHERE gm.pricing = 'batch'), 0)::float8 AS batch_cost_usd,
           COALESCE(sum(gm."cachedCostUsd"), 0)::float8 AS cached_cost_usd,
           COALESCE(sum(gm."costUsd") FILTER (WHERE gm.pricing IN ('batch', 'flex')), 0)::float8
               AS saving_usd
    FROM "GeneratedMessage" gm
    WHERE gm."createdAt" >= :since AND gm."createdAt" < :until
      AND {_ONE_CAMPAIGN.format(column='gm."campaignId"')}
    GROUP BY gm."campaignId", gm."stepId"
    """
).bindparams(*_PARAMS)

# The same emails by the model that wrote them, for the report to name the models to price.
UNPRICED_MODELS = text(
    f"""
    SELECT gm."campaignId" AS campaign_id, gm.model, count(*) AS unpriced
    FROM "GeneratedMessage" gm
    WHERE gm."createdAt" >= :since AND gm."createdAt" < :until AND {_UNPRICED_EMAIL}
      AND {_ONE_CAMPAIGN.format(column='gm."campaignId"')}
    GROUP BY gm."campaignId", gm.model
    """
).bindparams(*_PARAMS)

# The window's sends: created in it (scheduled), or handed over in it (sent, failed, events).
# A handed-over send counts as sent when the server accepted it or any event proves it left.
_WINDOW_SENDS = """
    WITH window_sends AS (
        SELECT s.id, s."campaignId", s."stepId", s.status, s."scheduledFor", s."sentAt",
               s."attemptedAt", s."variantKey",
               s."createdAt" >= :since AND s."createdAt" < :until AS created,
               COALESCE(s."sentAt", s."attemptedAt") >= :since
                   AND COALESCE(s."sentAt", s."attemptedAt") < :until AS handed
        FROM "EmailSend" s
        WHERE ((s."createdAt" >= :since AND s."createdAt" < :until)
               OR (COALESCE(s."sentAt", s."attemptedAt") >= :since
                   AND COALESCE(s."sentAt", s."attemptedAt") < :until))
          AND {one_campaign}
    )
"""

# The intents that make a reply positive, as SQL literals (constants of the Intent enum).
_POSITIVE = ", ".join(f"'{intent}'" for intent in POSITIVE_INTENTS)

# Each window send with its flags: sent, failed, and which events of each type it has (human
# and machine opens and clicks apart; a reply classified at all, and classified positive).
_FLAGGED_SENDS = (
    _WINDOW_SENDS.format(one_campaign=_ONE_CAMPAIGN.format(column='s."campaignId"'))
    + f""",
    engaged AS (
        SELECT e."emailSendId" AS id,
               bool_or(e.type = 'open' AND NOT e."isMachine") AS opened,
               bool_or(e.type = 'open' AND e."isMachine") AS machine_opened,
               bool_or(e.type = 'click' AND NOT e."isMachine") AS clicked,
               bool_or(e.type = 'click' AND e."isMachine") AS machine_clicked,
               bool_or(e.type = 'reply') AS replied,
               bool_or(e.type = 'reply' AND rc.id IS NOT NULL) AS classified,
               bool_or(e.type = 'reply' AND rc.intent IN ({_POSITIVE})) AS positively_replied,
               bool_or(e.type = 'bounce') AS bounced,
               bool_or(e.type = 'unsubscribe') AS unsubscribed,
               bool_or(e.type = 'complaint') AS complained
        FROM "EngagementEvent" e
        JOIN window_sends w ON w.id = e."emailSendId" AND w.handed
        LEFT JOIN "ReplyClassification" rc ON rc."engagementEventId" = e.id
        WHERE e."occurredAt" < :until
        GROUP BY e."emailSendId"
    ),
    flagged AS (
        SELECT w."campaignId", w."stepId", w."variantKey", w.created, w.status,
               w.handed AND (w."sentAt" IS NOT NULL OR g.id IS NOT NULL) AS sent,
               w.handed AND w."sentAt" IS NULL AND g.id IS NULL
                   AND w.status IN ('failed', 'unknown') AS failed,
               g.opened, g.machine_opened, g.clicked, g.machine_clicked, g.replied,
               g.classified, g.positively_replied, g.bounced, g.unsubscribed, g.complained
        FROM window_sends w LEFT JOIN engaged g ON g.id = w.id
    )
"""
)

SENDS = text(
    _FLAGGED_SENDS
    + """
    SELECT "campaignId" AS campaign_id, "stepId" AS step_id,
           count(*) FILTER (WHERE created) AS scheduled,
           count(*) FILTER (WHERE sent) AS sent,
           count(*) FILTER (WHERE failed) AS failed,
           count(*) FILTER (WHERE sent AND opened) AS unique_opens,
           count(*) FILTER (WHERE sent AND clicked) AS unique_clicks,
           count(*) FILTER (WHERE sent AND machine_opened AND opened IS NOT TRUE)
               AS machine_opens,
           count(*) FILTER (WHERE sent AND machine_clicked AND clicked IS NOT TRUE)
               AS machine_clicks,
           count(*) FILTER (WHERE sent AND replied) AS replies,
           count(*) FILTER (WHERE sent AND positively_replied) AS positive_replies,
           count(*) FILTER (WHERE sent AND bounced) AS bounces,
           count(*) FILTER (WHERE sent AND unsubscribed) AS unsubscribes,
           count(*) FILTER (WHERE sent AND complained) AS complaints
    FROM flagged
    GROUP BY "campaignId", "stepId"
    """
).bindparams(*_PARAMS)

# Per step variant, the window's sends that recorded one, counted as SENDS counts them, plus
# the replies classified and those classified positive, and the campaign's
# `sendingRules.abTest`, which says what the test compares. Clicks are human clicks only.
VARIANT_SENDS = text(
    _FLAGGED_SENDS
    + """
    SELECT f."campaignId" AS campaign_id, f."stepId" AS step_id, f."variantKey" AS variant,
           c."sendingRules" -> 'abTest' AS ab_test,
           count(*) FILTER (WHERE sent) AS sent,
           count(*) FILTER (WHERE sent AND replied) AS replies,
           count(*) FILTER (WHERE sent AND classified) AS classified_replies,
           count(*) FILTER (WHERE sent AND positively_replied) AS positive_replies,
           count(*) FILTER (WHERE sent AND unsubscribed) AS unsubscribes,
           count(*) FILTER (WHERE sent AND bounced) AS bounces,
           count(*) FILTER (WHERE sent AND clicked) AS unique_clicks
    FROM flagged f
    JOIN "Campaign" c ON c.id = f."campaignId"
    WHERE f."variantKey" IS NOT NULL
    GROUP BY f."campaignId", f."stepId", f."variantKey", c."sendingRules" -> 'abTest'
    """
).bindparams(*_PARAMS)

# Seconds from due (scheduledFor) to sent (sentAt) of the sends accepted in the window, per
# step, per campaign (step_id NULL) and for the whole report (campaign_id NULL too).
LATENCY = text(
    f"""
    WITH lag AS (
        SELECT s."campaignId", s."stepId",
               EXTRACT(EPOCH FROM s."sentAt" - s."scheduledFor")::float8 AS seconds
        FROM "EmailSend" s
        WHERE s."sentAt" >= :since AND s."sentAt" < :until AND s."scheduledFor" IS NOT NULL
          AND {_ONE_CAMPAIGN.format(column='s."campaignId"')}
    )
    SELECT "campaignId" AS campaign_id, "stepId" AS step_id,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS due_to_sent_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) AS due_to_sent_p95_s
    FROM lag
    GROUP BY GROUPING SETS (("campaignId", "stepId"), ("campaignId"), ())
    HAVING count(*) > 0
    """
).bindparams(*_PARAMS)

# The review queue per step: messages pending review now that were written before `until`,
# and how long the oldest has waited at `until` (the partial index on pending messages).
REVIEW = text(
    f"""
    SELECT gm."campaignId" AS campaign_id, gm."stepId" AS step_id,
           count(*) AS pending_review,
           EXTRACT(EPOCH FROM CAST(:until AS timestamp) - min(gm."createdAt"))::float8
               AS oldest_pending_review_s
    FROM "GeneratedMessage" gm
    WHERE gm.status = 'pending_review' AND gm."createdAt" < :until
      AND {_ONE_CAMPAIGN.format(column='gm."campaignId"')}
    GROUP BY gm."campaignId", gm."stepId"
    """
).bindparams(bindparam("until", type_=UTCDateTime), bindparam("campaign_id", type_=Text))

# One row per send with a mailbox handed over in the window that counts as sent or failed (the
# same rules as SENDS), with its UTC day (timestamps are stored as UTC) and its events' flags.
MAILBOX_SENDS = text(
    f"""
    WITH handed AS (
        SELECT s.id, lower(s.mailbox) AS mailbox, s.status, s."sentAt" IS NOT NULL AS accepted,
               CAST(COALESCE(s."sentAt", s."attemptedAt") AS date) AS day
        FROM "EmailSend" s
        WHERE s.mailbox IS NOT NULL
          AND COALESCE(s."sentAt", s."attemptedAt") >= :since
          AND COALESCE(s."sentAt", s."attemptedAt") < :until
          AND {_ONE_CAMPAIGN.format(column='s."campaignId"')}
    ),
    engaged AS (
        SELECT e."emailSendId" AS id,
               bool_or(e.type = 'bounce'
                       AND e.metadata ->> 'bounceKind' IS DISTINCT FROM 'soft') AS hard_bounced,
               bool_or(e.type = 'bounce' AND e.metadata ->> 'bounceKind' = 'soft') AS soft_bounced,
               bool_or(e.type = 'complaint') AS complained,
               bool_or(e.type = 'reply') AS replied,
               bool_or(e.type = 'open' AND NOT e."isMachine") AS opened
        FROM "EngagementEvent" e
        JOIN handed h ON h.id = e."emailSendId"
        WHERE e."occurredAt" < :until
        GROUP BY e."emailSendId"
    )
    SELECT h.mailbox, h.day,
           h.accepted OR g.id IS NOT NULL AS sent,
           NOT h.accepted AND g.id IS NULL AND h.status IN ('failed', 'unknown') AS failed,
           COALESCE(g.hard_bounced, false) AS hard_bounced,
           COALESCE(g.soft_bounced, false) AS soft_bounced,
           COALESCE(g.complained, false) AS complained,
           COALESCE(g.replied, false) AS replied,
           COALESCE(g.opened, false) AS opened
    FROM handed h LEFT JOIN engaged g ON g.id = h.id
    WHERE h.accepted OR g.id IS NOT NULL OR h.status IN ('failed', 'unknown')
    """
).bindparams(*_PARAMS)

# Per campaign and UTC day: the sends of the window that count as sent (the same rules as SENDS),
# on the day of their handover, and their replies (before `until`) on the day the first one
# occurred; each side sums to SENDS' `sent` and `replies`.
DAILY = text(
    _WINDOW_SENDS.format(one_campaign=_ONE_CAMPAIGN.format(column='s."campaignId"'))
    + """,
    engaged AS (
        SELECT e."emailSendId" AS id,
               min(e."occurredAt") FILTER (WHERE e.type = 'reply') AS replied_at
        FROM "EngagementEvent" e
        JOIN window_sends w ON w.id = e."emailSendId" AND w.handed
        WHERE e."occurredAt" < :until
        GROUP BY e."emailSendId"
    ),
    sent AS (
        SELECT w."campaignId",
               CAST(COALESCE(w."sentAt", w."attemptedAt") AS date) AS sent_day,
               CAST(g.replied_at AS date) AS reply_day
        FROM window_sends w LEFT JOIN engaged g ON g.id = w.id
        WHERE w.handed AND (w."sentAt" IS NOT NULL OR g.id IS NOT NULL)
    ),
    tallies AS (
        SELECT "campaignId", sent_day AS day, 1 AS sent, 0 AS replies FROM sent
        UNION ALL
        SELECT "campaignId", reply_day, 0, 1 FROM sent WHERE reply_day IS NOT NULL
    )
    SELECT "campaignId" AS campaign_id, day, sum(sent)::bigint AS sent,
           sum(replies)::bigint AS replies
    FROM tallies
    GROUP BY "campaignId", day
    """
).bindparams(*_PARAMS)

SNAPSHOT = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def read_report_inputs(session: Session, window: ReportWindow) -> ReportInputs:
    """The frames of the report over window, each with the columns core expects."""
    if not session.in_transaction():
        session.execute(SNAPSHOT)
    connection = session.connection()
    params = {"since": window.since, "until": window.until, "campaign_id": window.campaign_id}
    queries = {
        "campaigns": CAMPAIGNS,
        "steps": STEPS,
        "enrolments": ENROLMENTS,
        "generation": GENERATION,
        "unpriced_models": UNPRICED_MODELS,
        "sends": SENDS,
        "latency": LATENCY,
        "review": REVIEW,
        "mailbox_sends": MAILBOX_SENDS,
        "variant_sends": VARIANT_SENDS,
        "daily": DAILY,
    }
    frames: dict[str, pd.DataFrame] = {}
    for name, query in queries.items():
        wanted = {key: params[key] for key in query.compile().params if key in params}
        frame = pd.read_sql(query, connection, params=wanted)
        frames[name] = frame[list(INPUT_COLUMNS[name])]
    return ReportInputs(**frames)
