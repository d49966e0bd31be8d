"""A/B variants of a sequence step, and which one a lead gets.

A variant (`SequenceStepVariant`) may override its step's subject and body templates and AI
instructions; what it leaves empty is the step's own. A lead's variant is chosen by a keyed
hash: HMAC-SHA256 keyed by the step id, over the CampaignLead id, read as a number uniform in
[0, 1) and placed on the variants' weights laid end to end in key order. Nothing random and
nothing stored decides it, so a re-run, a retry, another worker process or a preview gives a
lead the same variant; keying by the step makes a lead's variants at two steps independent.
A weight of 0 turns a variant off for new leads.

Two things come before the hash: the variant a lead's message already has (a step backfill
rewrites a message in its own variant, `pinned`), and the step's A/B test winner once
`sendingRules.abTest.autoSelect` recorded one (every later lead gets it).
"""

import hashlib
import hmac
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from pydantic import BaseModel, ConfigDict

# `A`, `B`, … or a short upper-case name (`LONG_SUBJECT`): what the report and the web app show.
VARIANT_KEY_PATTERN = r"^[A-Z][A-Z0-9_]{0,31}$"
# Far more than any weight total needs: the buckets' edges are exact to 1 in 2**53.
_POINT_BITS = 53


class StepVariant(BaseModel):
    """One variant as the database holds it (`SequenceStepVariant`)."""

    model_config = ConfigDict(frozen=True)

    key: str
    subjectTemplate: str | None = None
    bodyTemplate: str | None = None
    aiInstructions: str | None = None
    weight: int = 1


def variant_point(step_id: str, campaign_lead_id: str) -> int:
    """The lead's place for this step, uniform over [0, 2**53): HMAC-SHA256 keyed by the step
    id over the CampaignLead id, its first 53 bits."""
    digest = hmac.new(step_id.encode(), campaign_lead_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _POINT_BITS)


def assign_variant(
    variants: Sequence[StepVariant], *, step_id: str, campaign_lead_id: str
) -> StepVariant | None:
    """The variant the lead's hash falls in, by weight in key order; None when every weight is
    0 (or there are no variants: the step as written)."""
    live = sorted((v for v in variants if v.weight > 0), key=lambda v: v.key)
    total = sum(v.weight for v in live)
    if total == 0:
        return None
    edges = list(accumulate(v.weight for v in live))
    # In integers, so the point times the total stays below the total: always a variant's.
    point = (variant_point(step_id, campaign_lead_id) * total) >> _POINT_BITS
    return live[bisect_right(edges, point)]


def choose_variant(
    variants: Sequence[StepVariant],
    *,
    step_id: str,
    campaign_lead_id: str,
    winner: str | None = None,
    pinned: str | None = None,
) -> StepVariant | None:
    """The lead's variant: the one its message already has, else the recorded winner, else
    the hash's. A pinned or winning key the step no longer has falls through to the next rule."""
    by_key = {v.key: v for v in variants}
    for key in (pinned, winner):
        if key is not None and key in by_key:
            return by_key[key]
    return assign_variant(variants, step_id=step_id, campaign_lead_id=campaign_lead_id)
