"""The naive baseline itself, in its child process: the seed's data flow taken literally, one lead
at a time, one commit per lead, without Prefect (this module must never import it)."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta
from typing import Any

from openai import OpenAI
from sqlalchemy import select

from benchmarks.generation_setup import AS_OF, DUMMY_KEY, MODEL
from benchmarks.harness.machine import CPUMeter, RssSampler, loadavg, peak_rss_kib, rss_now_kib
from benchmarks.harness.servers import fake_openai
from core.campaigns.lead_fields import LEAD_FIELDS
from core.campaigns.sending_rules import parse_sending_rules
from core.campaigns.templates import lead_variables
from core.generation.draft import EmailDraft, render_draft
from core.generation.generate import sender_name
from core.generation.llm import RESPONSE_FORMAT
from core.generation.pricing import cost_column, token_cost
from core.generation.prompt import PROMPT_VERSION, build_messages, prompt_profile
from db.engine import make_engine, make_session_factory
from db.models import Campaign, CampaignLead, EmailSend, GeneratedMessage, Lead, SequenceStep


def naive_process_campaign_sends(factory: Any, client: Any, *, as_of: datetime, model: str):
    """Seed data-flow steps 2 to 5, literally: one lead at a time, one commit per lead."""
    counts = {"due": 0, "scheduled": 0, "completed": 0, "llm_calls": 0}
    with factory() as session:
        # 2. Cron job finds due emails:
        #    SELECT * FROM CampaignLead WHERE status = 'active' AND nextScheduledDate <= NOW()
        due = session.scalars(
            select(CampaignLead).where(
                CampaignLead.status == "active", CampaignLead.nextScheduledDate <= as_of
            )
        ).all()
        counts["due"] = len(due)
        for enrolment in due:
            lead = session.get(Lead, enrolment.leadId)
            campaign = session.get(Campaign, enrolment.campaignId)
            step = session.scalars(
                select(SequenceStep).where(
                    SequenceStep.campaignId == enrolment.campaignId,
                    SequenceStep.stepOrder == enrolment.currentStepOrder,
                )
            ).one()
            next_step = session.scalars(
                select(SequenceStep).where(
                    SequenceStep.campaignId == enrolment.campaignId,
                    SequenceStep.stepOrder == enrolment.currentStepOrder + 1,
                )
            ).one_or_none()

            # 3. AI generates the personalised email: template + lead data + AI instructions.
            rules = parse_sending_rules(campaign.sendingRules)
            name = sender_name(rules)
            fields = {field: getattr(lead, field) for field in LEAD_FIELDS}
            variables = lead_variables(fields, lead.customFields, name)
            draft = render_draft(step.subjectTemplate, step.bodyTemplate, variables)
            messages = build_messages(
                campaign.goal,
                step.aiInstructions,
                draft,
                prompt_profile(variables),
                sender_name=name,
                link_allowlist=rules.link_allowlist,
            )
            started = time.monotonic()
            completion = client.chat.completions.create(
                model=model, messages=messages, response_format=RESPONSE_FORMAT
            )
            latency_ms = round(1000 * (time.monotonic() - started))
            counts["llm_calls"] += 1
            email = EmailDraft.model_validate_json(completion.choices[0].message.content or "")
            usage = completion.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            message = GeneratedMessage(
                campaignId=enrolment.campaignId,
                leadId=enrolment.leadId,
                stepId=step.id,
                subject=email.subject,
                body=email.body,
                status="generated",
                model=completion.model,
                promptVersion=PROMPT_VERSION,
                promptTokens=prompt_tokens,
                completionTokens=completion_tokens,
                latencyMs=latency_ms,
                costUsd=cost_column(
                    token_cost(
                        completion.model,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                    )
                ),
            )
            session.add(message)
            session.flush()  # like the pseudo-code's create(): the row and its id exist now

            # 4. Email scheduled for sending.
            session.add(
                EmailSend(
                    campaignId=enrolment.campaignId,
                    leadId=enrolment.leadId,
                    stepId=step.id,
                    generatedMessageId=message.id,
                    toEmail=lead.email,
                    status="scheduled",
                    scheduledFor=as_of,
                )
            )

            # 5. Progression updated.
            enrolment.currentStepOrder = step.stepOrder + 1
            if next_step is None:
                enrolment.status = "completed"
                enrolment.nextScheduledDate = None
                counts["completed"] += 1
            else:
                enrolment.nextScheduledDate = as_of + timedelta(days=next_step.delayDays)
            session.commit()
            counts["scheduled"] += 1
    return counts


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured naive run, measured exactly as generation.child_flow measures a flow run."""
    n = spec["n"]
    with fake_openai(spec["latency_ms"]) as fake:
        engine = make_engine(spec["database_url"])
        with engine.connect():  # connect before the clock starts, as the flow child does
            pass
        factory = make_session_factory(engine)
        # The pipeline's own client settings (LLM_TIMEOUT_SECONDS, LLM_MAX_RETRIES).
        client = OpenAI(api_key=DUMMY_KEY, base_url=fake.base_url, timeout=30.0, max_retries=4)
        rss_before = rss_now_kib()
        meter = CPUMeter(
            {"fake_openai": fake.child_pid, "prefect_api": spec.get("prefect_server_pid")},
            spec.get("postmaster_pid"),
        )
        load0 = loadavg()
        started_epoch = time.time()
        started = time.perf_counter()
        with RssSampler() as sampler:
            counts = naive_process_campaign_sends(factory, client, as_of=AS_OF, model=MODEL)
        elapsed = time.perf_counter() - started
        ended_epoch = time.time()
        cpu_s = meter.report()
        stats = fake.stats()
        client.close()
        engine.dispose()

    return {
        "kind": "naive",
        "n": n,
        "latency_ms": spec["latency_ms"],
        "concurrency": 1,
        "seconds": elapsed,
        "started_epoch": started_epoch,
        "ended_epoch": ended_epoch,
        "leads_per_s": counts["scheduled"] / elapsed,
        "counts": counts,
        "llm_requests": stats.requests,
        "prefect_imported": "prefect" in sys.modules,
        "rss_before_flow_mib": rss_before / 1024,
        "peak_rss_mib": peak_rss_kib() / 1024,
        **sampler.figures(),
        "cpu_s": cpu_s,
        "loadavg_before": load0,
    }
