"""Every name in tasks/ and flows/ a benchmark uses, and every attribute it patches, in one place.

Other packages are imported where they are used (a rename there fails on import). These names
are the ones that move most, and the probes replace some of them by attribute in their child
process, where a rename used to fail silently. tests/unit/test_benchmarks.py imports this
module and checks every hook, so after a rename the suite fails and this file is what to fix.
Each hook is written as a real attribute access and found by identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import FunctionType
from typing import Any

import psycopg

import core.delivery.lane
import core.delivery.message
import core.delivery.transport
import core.generation.config
import db.queries.delivery
import tasks.database
import tasks.delivery
import tasks.delivery_lane
import tasks.generation
from benchmarks.harness.machine import ROOT
from core.generation.config import GenerationConfig
from core.generation.draft import render_draft
from core.generation.gate import check_draft
from core.generation.generate import NoCache, plan_writes, prepare
from core.generation.llm import OpenAIGenerator
from core.generation.prompt import build_messages, generation_input_hash
from db.queries.delivery import HAND_OVER_GROUP, RECORD_RESULTS
from flows.ingest_engagement_events import EngagementSource, ingest_engagement_events
from flows.process_campaign_sends import _publish_counts, process_campaign_sends
from flows.send_scheduled_emails import send_scheduled_emails
from tasks.generation import Claim, ResultStoreCache, write_messages
from tests.support.smtp_server import LoopbackSMTP

__all__ = [
    "Claim",
    "EngagementSource",
    "GenerationConfig",
    "NoCache",
    "ResultStoreCache",
    "ingest_engagement_events",
    "process_campaign_sends",
    "send_scheduled_emails",
]


@dataclass(frozen=True)
class Hook:
    """An attribute a probe reads and replaces with a wrapper, in its child process only."""

    owner: Any
    name: str

    def original(self) -> Any:
        return getattr(self.owner, self.name)

    def replace(self, value: Any) -> None:
        setattr(self.owner, self.name, value)


def hook(owner: Any, value: Any) -> Hook:
    """The attribute of `owner` that is `value` (a module may bind it under another name)."""
    names = [name for name, bound in vars(owner).items() if bound is value]
    if len(names) != 1:
        raise LookupError(f"{owner!r} binds {value!r} as {names or 'nothing'}")
    return Hook(owner, names[0])


# benchmarks/generation_flow.py: Probe, around what tasks.generation calls.
GENERATION_CLAIM = hook(tasks.generation, tasks.generation.claim_due_leads)
GENERATION_RECORD = hook(tasks.generation, tasks.generation.record_messages)
GENERATION_HOLD = hook(tasks.generation, tasks.generation.hold_leads)
# Every task's transaction: tasks.database.in_transaction runs it on a worker thread.
GENERATION_TRANSACTION = hook(tasks.database, tasks.database.run_in_transaction)
GENERATION_PER_LEAD = hook(tasks.generation, tasks.generation.generate_for_lead)
# benchmarks/generation_flow.py: apply_variant, the what-ifs.
GENERATION_CACHE = hook(tasks.generation, tasks.generation.ResultStoreCache)
# The client a run opens: GenerationConfig.open_generator makes it.
GENERATION_CLIENT = hook(core.generation.config, OpenAIGenerator)

# benchmarks/delivery_probe.py: Probe and ThreadProfiles, around what tasks.delivery calls.
HAND_OVER_QUERY = hook(db.queries.delivery, db.queries.delivery.hand_over_group)
LANE_RUN = hook(tasks.delivery_lane.Lane, tasks.delivery_lane.Lane.run)
# (hook, label in the breakdown, split by whether a delivery lane ran it)
DELIVERY_TIMED: tuple[tuple[Hook, str, bool], ...] = (
    (hook(db.queries.delivery, db.queries.delivery.record_results), "record_results", False),
    (
        hook(db.queries.delivery, db.queries.delivery.claim_due_sends),
        "claim (query + DueSend)",
        False,
    ),
    (
        hook(tasks.delivery, tasks.delivery.plan_batch),
        "plan (usage query + plan_deliveries)",
        False,
    ),
    (
        hook(tasks.delivery_lane, tasks.delivery_lane.outgoing_message),
        "outgoing_message (token, ids, build)",
        False,
    ),
    # Patched where outgoing_message looks it up: lane's binding of message.build_message.
    (hook(core.delivery.lane, core.delivery.message.build_message), "build_message", False),
    (
        hook(core.delivery.transport.SMTPTransport, core.delivery.transport.SMTPTransport.deliver),
        "SMTPTransport.deliver",
        False,
    ),
    (
        hook(core.delivery.transport, core.delivery.transport._wire_bytes),
        "_wire_bytes (as_bytes)",
        False,
    ),
    (hook(psycopg.Connection, psycopg.Connection.commit), "COMMIT", True),
    # --accounts: each lane logs in to its own mailbox before its first handover, and takes
    # its sends' room in the campaign's cap up front (and gives back what it did not use).
    (
        hook(core.delivery.transport.SMTPTransport, core.delivery.transport.SMTPTransport.open),
        "SMTPTransport.open (connect, AUTH)",
        False,
    ),
    (
        hook(db.queries.delivery, db.queries.delivery.reserve_campaign_room),
        "reserve campaign room",
        False,
    ),
    (
        hook(db.queries.delivery, db.queries.delivery.release_campaign_room),
        "release campaign room",
        False,
    ),
)
# The delivery probe tells statements apart by these fragments of their SQL.
HAND_OVER_SQL = "SET status = 'sending'"
RECORD_RESULTS_SQL = '"sentAt" = CASE'
SQL_FRAGMENTS = ((HAND_OVER_GROUP, HAND_OVER_SQL), (RECORD_RESULTS, RECORD_RESULTS_SQL))

# benchmarks/harness/servers.py: LoopbackSMTP counts deliveries per address; the total is read
# from its private counter under its lock.
SMTP_SERVER_ATTRIBUTES = (LoopbackSMTP, ("_cond", "_deliveries"))


def frame(function: Any) -> str:
    """How py-spy names a project function's frames: `Qualified.name (path/from/root.py`."""
    code = getattr(function, "fn", function)  # a Prefect task wraps its function
    assert isinstance(code, FunctionType), function
    path = Path(code.__code__.co_filename).resolve().relative_to(ROOT)
    return f"{code.__qualname__} ({path}"


# benchmarks/generation_profile.py: project functions whose inclusive share it reports.
PROFILED: tuple[tuple[str, str], ...] = (
    (frame(OpenAIGenerator.generate), "OpenAIGenerator.generate (whole openai call)"),
    (frame(ResultStoreCache.get), "ResultStoreCache.get (cache lookup, a miss)"),
    (frame(ResultStoreCache.put), "ResultStoreCache.put (per-lead result write)"),
    (frame(prepare), "core.generation.generate.prepare (render, prompt, hash)"),
    (frame(check_draft), "core.generation.gate.check_draft"),
    (frame(render_draft), "core.generation.draft.render_draft (in prepare)"),
    (frame(build_messages), "core.generation.prompt.build_messages"),
    (frame(generation_input_hash), "core.generation.prompt.generation_input_hash (in prepare)"),
    (frame(plan_writes), "core.generation.generate.plan_writes"),
    (frame(write_messages), "write-messages task body"),
    (frame(_publish_counts), "artifacts"),
)
