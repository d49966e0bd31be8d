"""A/B variants of steps: loading a batch's, counting the tests autoSelect judges, and
recording a step's winner.

Every reader of due leads (`db.queries.threads.due_leads`) loads the variants of the batch's
steps in one statement, so the claim, a preview, a launch sample and a step backfill take a lead
in the same variant. The variant is then chosen in `core.campaigns.variants`.
"""

from collections.abc import Collection
from datetime import datetime
from itertools import groupby
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core.analytics.variant_report import StepTest, VariantTally, ab_test
from core.campaigns.variants import StepVariant
from core.replies.intent import POSITIVE_INTENTS
from db.base import UTCDateTime

STEP_VARIANTS = text(
    """
    SELECT st.id, st."variantWinner",
           COALESCE((SELECT json_agg(json_build_object(
                         'key', v.key, 'subjectTemplate', v."subjectTemplate",
                         'bodyTemplate', v."bodyTemplate", 'aiInstructions', v."aiInstructions",
                         'weight', v.weight) ORDER BY v.key)
                     FROM "SequenceStepVariant" v WHERE v."stepId" = st.id), '[]') AS variants
    FROM "SequenceStep" st
    WHERE st.id = ANY(CAST(:step_ids AS text[]))
      AND (st."variantWinner" IS NOT NULL
           OR EXISTS (SELECT 1 FROM "SequenceStepVariant" v WHERE v."stepId" = st.id))
    """
)
_VARIANTS = TypeAdapter(tuple[StepVariant, ...])

# The steps autoSelect judges: no winner yet, in an active campaign whose abTest.autoSelect is
# true; per variant still on (weight above 0, so a variant switched off does not hold the test
# back), its sends accepted by the server over all time and their replies, classified and
# positive. The unique (campaignId, leadId, stepId) index leads every send lookup.
STEP_TESTS = text(
    """
    SELECT st.id AS step_id, c."sendingRules" -> 'abTest' AS ab_test, v.key AS variant,
           count(s.id) AS sent,
           count(s.id) FILTER (WHERE r.replied) AS replies,
           count(s.id) FILTER (WHERE r.positive) AS positive_replies,
           count(s.id) FILTER (WHERE r.classified) AS classified_replies
    FROM "Campaign" c
    JOIN "SequenceStep" st ON st."campaignId" = c.id AND st."variantWinner" IS NULL
    JOIN "SequenceStepVariant" v ON v."stepId" = st.id AND v.weight > 0
    LEFT JOIN "EmailSend" s
           ON s."campaignId" = c.id AND s."stepId" = st.id AND s."variantKey" = v.key
          AND s."sentAt" IS NOT NULL
    LEFT JOIN LATERAL (
        SELECT true AS replied,
               bool_or(rc.id IS NOT NULL) AS classified,
               bool_or(rc.intent = ANY(CAST(:positive AS text[]))) AS positive
        FROM "EngagementEvent" e
        LEFT JOIN "ReplyClassification" rc ON rc."engagementEventId" = e.id
        WHERE e."emailSendId" = s.id AND e.type = 'reply'
        HAVING count(*) > 0
    ) r ON true
    WHERE c.status = 'active'
      AND jsonb_typeof(c."sendingRules") = 'object'
      AND c."sendingRules" -> 'abTest' ->> 'autoSelect' = 'true'
      AND (CAST(:campaign_id AS text) IS NULL OR c.id = :campaign_id)
    GROUP BY st.id, c."sendingRules" -> 'abTest', v.key
    ORDER BY st.id, v.key
    """
).bindparams(
    bindparam("campaign_id", type_=Text),
    bindparam("positive", value=[intent.value for intent in POSITIVE_INTENTS]),
)

# Only the first decision stands: a later run that also finds the test significant changes
# nothing, so the figures recorded are those the winner was chosen on.
RECORD_WINNER = text(
    """
    UPDATE "SequenceStep"
    SET "variantWinner" = :key, "variantWinnerAt" = :now, "variantWinnerFigures" = :figures
    WHERE id = :step_id AND "variantWinner" IS NULL
      AND EXISTS (SELECT 1 FROM "SequenceStepVariant" v
                  WHERE v."stepId" = :step_id AND v.key = :key)
    RETURNING id
    """
).bindparams(bindparam("now", type_=UTCDateTime), bindparam("figures", type_=JSONB))


def step_variants(session: Session, step_ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Each step's `DueLead` fields `variants` (in key order) and `variantWinner`; steps with
    neither are left out."""
    if not step_ids:
        return {}
    rows = session.execute(STEP_VARIANTS, {"step_ids": sorted(step_ids)})
    return {
        step_id: {"variants": _VARIANTS.validate_python(variants), "variantWinner": winner}
        for step_id, winner, variants in rows
    }


def step_tests(session: Session, *, campaign_id: str | None) -> list[StepTest]:
    """The A/B tests autoSelect is to judge now (see STEP_TESTS)."""
    rows = session.execute(STEP_TESTS, {"campaign_id": campaign_id}).mappings().all()
    tests = []
    for step_id, step_rows in groupby(rows, key=lambda row: row["step_id"]):
        variants = list(step_rows)
        tallies = tuple(VariantTally.of(row) for row in variants)
        tests.append(StepTest(step_id, ab_test(variants[0]["ab_test"]), tallies))
    return tests


def record_winner(
    session: Session, *, step_id: str, key: str, figures: dict[str, Any], now: datetime
) -> bool:
    """Record the step's A/B winner and the figures it won on; False when one was already
    recorded (or the step has no such variant)."""
    params = {"step_id": step_id, "key": key, "figures": figures, "now": now}
    return session.execute(RECORD_WINNER, params).first() is not None
