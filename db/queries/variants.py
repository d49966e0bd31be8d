"""A/B variants of steps: loading a batch's, and recording a step's winner.

Every reader of due leads (`db.queries.threads.due_leads`) loads the variants of the batch's
steps in one statement, so the claim, a preview, a launch sample and a step backfill take a lead
in the same variant. The variant is then chosen in `core.campaigns.variants`.
"""

from collections.abc import Collection
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core.campaigns.variants import StepVariant
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


def record_winner(
    session: Session, *, step_id: str, key: str, figures: dict[str, Any], now: datetime
) -> bool:
    """Record the step's A/B winner and the figures it won on; False when one was already
    recorded (or the step has no such variant)."""
    params = {"step_id": step_id, "key": key, "figures": figures, "now": now}
    return session.execute(RECORD_WINNER, params).first() is not None
